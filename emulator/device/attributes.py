"""The device's readable attributes: the Basic cluster (server) and the OTA Upgrade cluster (client, SPEC.md §3.1),
and the ZCL general commands that read them.

Values are described with zigpy's attribute definitions, so the data type byte of every record is the one
zigpy expects when it reads them back (ZIGPY_BELLOWS.md §1.8). Nothing here is writable from the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Basic, Ota

from emulator.ota import headers

GeneralCommand = foundation.GeneralCommand
Status = foundation.Status

# A table maps attribute id → (zigpy python type, value).
AttributeTable = Mapping[int, tuple[type, Any]]

ZCL_VERSION = 8  # ZCL revision 8 (07-5123-08)
BASIC_CLUSTER_REVISION = 3
OTA_CLUSTER_REVISION = 4  # SPEC.md §3.1 (ZBOSS uses 0x0004)

# SPEC.md §3.1 defaults: what the attributes read when nothing is downloaded or discovered.
NO_FILE_OFFSET = 0xFFFFFFFF
NO_FILE_VERSION = 0xFFFFFFFF
NO_STACK_VERSION = 0xFFFF
NO_IMAGE_TYPE = 0xFFFF
NO_SERVER = t.EUI64(b"\xff" * 8)

_B = Basic.AttributeDefs
_O = Ota.AttributeDefs


def basic_table(
    *,
    manufacturer_name: str,
    model: str,
    running_version: int,
    stack_version: int,
    hardware_version: int | None,
    sleepy: bool,
) -> dict[int, tuple[type, Any]]:
    """Basic cluster server attributes. ApplicationVersion is the release byte of the file version (SPEC.md
    §3.3 split), SWBuildID the whole running version in hex, HWVersion the version byte of 0xVVRR."""
    table: dict[int, tuple[type, Any]] = {
        _B.zcl_version.id: (_B.zcl_version.type, ZCL_VERSION),
        _B.app_version.id: (_B.app_version.type, (running_version >> 24) & 0xFF),
        _B.stack_version.id: (_B.stack_version.type, stack_version & 0xFF),
        _B.manufacturer.id: (_B.manufacturer.type, manufacturer_name),
        _B.model.id: (_B.model.type, model),
        _B.date_code.id: (_B.date_code.type, ""),
        _B.power_source.id: (
            _B.power_source.type,
            Basic.PowerSource.Battery if sleepy else Basic.PowerSource.Mains_single_phase,
        ),
        _B.sw_build_id.id: (_B.sw_build_id.type, f"{running_version:08X}"),
        _B.cluster_revision.id: (_B.cluster_revision.type, BASIC_CLUSTER_REVISION),
    }
    if hardware_version is not None:
        table[_B.hw_version.id] = (_B.hw_version.type, hardware_version >> 8)
    return table


def ota_table(
    *,
    upgrade_server_id: t.EUI64,
    file_offset: int,
    current_file_version: int,
    current_stack_version: int,
    downloaded_file_version: int,
    downloaded_stack_version: int,
    image_upgrade_status: int,
    manufacturer_id: int,
    image_type_id: int,
    minimum_block_period: int,
    image_stamp: int,
    upgrade_activation_policy: int,
    upgrade_timeout_policy: int,
) -> dict[int, tuple[type, Any]]:
    """OTA Upgrade client attributes 0x0000–0x000C and ClusterRevision (SPEC.md §3.1)."""
    return {
        _O.upgrade_server_id.id: (_O.upgrade_server_id.type, upgrade_server_id),
        _O.file_offset.id: (_O.file_offset.type, file_offset),
        _O.current_file_version.id: (_O.current_file_version.type, current_file_version),
        _O.current_zigbee_stack_version.id: (_O.current_zigbee_stack_version.type, current_stack_version),
        _O.downloaded_file_version.id: (_O.downloaded_file_version.type, downloaded_file_version),
        _O.downloaded_zigbee_stack_version.id: (_O.downloaded_zigbee_stack_version.type, downloaded_stack_version),
        _O.image_upgrade_status.id: (_O.image_upgrade_status.type, image_upgrade_status),
        _O.manufacturer_id.id: (_O.manufacturer_id.type, manufacturer_id),
        _O.image_type_id.id: (_O.image_type_id.type, image_type_id),
        _O.minimum_block_req_delay.id: (_O.minimum_block_req_delay.type, minimum_block_period),
        _O.image_stamp.id: (_O.image_stamp.type, image_stamp),
        _O.upgrade_activation_policy.id: (_O.upgrade_activation_policy.type, upgrade_activation_policy),
        _O.upgrade_timeout_policy.id: (_O.upgrade_timeout_policy.type, upgrade_timeout_policy),
        _O.cluster_revision.id: (_O.cluster_revision.type, OTA_CLUSTER_REVISION),
    }


def _type_value(kind: type, value: Any) -> foundation.TypeValue:
    data_type = foundation.DataType.from_python_type(kind)
    return foundation.TypeValue(type=data_type.type_id, value=kind(value))


def _header(request: foundation.ZCLHeader, command: GeneralCommand) -> bytes:
    """Response header: same TSN and manufacturer code, opposite direction, no default response wanted."""
    return headers.general_bytes(request.tsn, command, request.direction.flip(), True, request.manufacturer)


def _schema(command: GeneralCommand) -> Any:
    return foundation.GENERAL_COMMANDS[command].schema


def _response(request: foundation.ZCLHeader, command: GeneralCommand, **fields: Any) -> bytes:
    """The frame of general response `command` to `request`, with the payload `fields`."""
    payload: bytes = _schema(command)(**fields).serialize()
    return _header(request, command) + payload


def answer_general(header: foundation.ZCLHeader, command: Any, table: AttributeTable) -> bytes | Status | None:
    """The response frame to a general command on a cluster the device implements, the status of the Default
    Response it calls for, or None for a command that asks for no answer at all. Manufacturer-specific requests
    name no attribute this device has."""
    own: AttributeTable = table if header.manufacturer is None else {}
    command_id = header.command_id
    if command_id == GeneralCommand.Read_Attributes:
        read = [
            foundation.ReadAttributeRecord(attrid, Status.SUCCESS, _type_value(*own[attrid]))
            if attrid in own
            else foundation.ReadAttributeRecord(attrid, Status.UNSUPPORTED_ATTRIBUTE)
            for attrid in command.attribute_ids
        ]
        return _response(header, GeneralCommand.Read_Attributes_rsp, status_records=read)
    if command_id in (GeneralCommand.Write_Attributes, GeneralCommand.Write_Attributes_Undivided):
        written = [
            foundation.WriteAttributesStatusRecord(
                status=Status.READ_ONLY if record.attrid in own else Status.UNSUPPORTED_ATTRIBUTE,
                attrid=record.attrid,
            )
            for record in command.attributes
        ]
        if not written:
            return Status.SUCCESS
        return _response(
            header, GeneralCommand.Write_Attributes_rsp, status_records=foundation.WriteAttributesResponse(written)
        )
    if command_id == GeneralCommand.Write_Attributes_No_Response:
        return None
    if command_id == GeneralCommand.Discover_Attributes:
        ids = sorted(a for a in own if a >= command.start_attribute_id)
        chosen = ids[: command.max_attribute_ids]
        info = [
            foundation.DiscoverAttributesResponseRecord(
                attrid=a, datatype=foundation.DataType.from_python_type(own[a][0]).type_id
            )
            for a in chosen
        ]
        return _response(
            header,
            GeneralCommand.Discover_Attributes_rsp,
            discovery_complete=t.Bool(len(chosen) == len(ids)),
            attribute_info=info,
        )
    return Status.UNSUP_GENERAL_COMMAND
