"""Pure judges of the server's Smart Energy security (S-19 … S-21): they read the Key Establishment and OTA frames a
security scenario recorded (`Transcript.keys`) and decide, judging nothing from the server's own account.

A server that declares no Smart Energy security (zigpy's: it has no Key Establishment server) cannot be held to
rules about link keys: its checks are not applicable, and the note says what it did instead.
"""

from __future__ import annotations

from emulator.conformance.server.answers import describe
from emulator.conformance.server.keys import CLUSTER_SPECIFIC, TO_CLIENT, Presented
from emulator.conformance.server.probe import Exchange, raw
from emulator.conformance.server.transcript import KeyRecord, Transcript
from emulator.conformance.verdict import FrameRecord, Judgement, Verdict, evidence
from emulator.security import key_establishment as ke

NO_KEY_SERVER = "no Key Establishment server: no link key can be established"


def _key_record(tr: Transcript) -> KeyRecord:
    if tr.keys is None:
        raise ValueError("a security check judges a transcript of a security scenario")
    return tr.keys


def _server_frames(exchanges: list[Exchange], command: int) -> list[FrameRecord]:
    """The server → client Key Establishment commands `command` among the answers of `exchanges`."""
    found = []
    for exchange in exchanges:
        for frame in exchange.answers:
            data = raw(frame)
            if len(data) >= 3 and data[0] & 0x03 == CLUSTER_SPECIFIC and data[0] & TO_CLIENT and data[2] == command:
                found.append(frame)
    return found


def _initiate(attempt: list[Exchange]) -> list[Exchange]:
    """The exchange of an attempt that sent Initiate Key Establishment Request (empty when none was sent)."""
    for exchange in attempt:
        data = raw(exchange.sent) if exchange.request is not None else b""
        if (
            len(data) >= 3
            and data[0] & 0x0B == CLUSTER_SPECIFIC
            and data[2] == ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST
        ):
            return [exchange]
    return []


def _status_text(value: int) -> str:
    try:
        return f"{ke.TerminateStatus(value).name} (0x{value:02X})"
    except ValueError:
        return f"0x{value:02X}"


def _clear_note(keys: KeyRecord) -> str:
    """What a server without key establishment did with the probe's OTA requests in the clear."""
    clear = [a.exchange for a in keys.requests if not a.encrypted]
    answered = [e for e in clear if e.answers]
    if not clear:
        return NO_KEY_SERVER
    if not answered:
        return f"{NO_KEY_SERVER}; it left the OTA requests without APS encryption unanswered"
    said = "; ".join(f"{e.label}: {describe(e.answers[0])}" for e in answered)
    return (
        f"{NO_KEY_SERVER}; it answers OTA requests without APS encryption from a device it shares only the "
        f"network key with ({said})"
    )


def judge_clear_ota(tr: Transcript) -> Judgement:
    """S-19: with a CBKE link key in place, an OTA request in the clear gets no answer; the same request
    APS-encrypted does (control)."""
    keys = _key_record(tr)
    clear = [a.exchange for a in keys.requests if not a.encrypted]
    encrypted = [a.exchange for a in keys.requests if a.encrypted]
    if not keys.link_key:
        if not tr.claims.se_security:
            note = _clear_note(keys)
            return Judgement(Verdict.NOT_APPLICABLE, note, note=note)
        return Judgement(
            Verdict.FAIL,
            f"declares Smart Energy security, but key establishment with a genuine certificate gave no link key "
            f"({keys.outcome})",
            evidence([f for attempt in keys.attempts.values() for e in attempt for f in e.frames]),
        )
    answered = [e for e in clear if e.answers]
    if answered:
        first = answered[0]
        return Judgement(
            Verdict.FAIL,
            f"answered {describe(first.answers[0])} to '{first.label}' although the probe holds a CBKE link key "
            "(SE: OTA Upgrade frames travel APS-encrypted; a clear one is dropped)",
            evidence(*(e.frames for e in answered)),
            note="serves OTA requests without APS encryption from a device that holds a link key",
        )
    silent = [e for e in encrypted if not e.answers]
    if not encrypted or silent:
        what = f"'{silent[0].label}'" if silent else "any APS-encrypted request"
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"no answer to {what} either, so the silence to the clear requests says nothing",
            evidence(*(a.exchange.frames for a in keys.requests)),
        )
    return Judgement(
        Verdict.PASS,
        f"left {len(clear)} OTA request(s) without APS encryption unanswered; answered the same "
        f"{len(encrypted)} APS-encrypted under the CBKE link key ({describe(encrypted[0].answers[0])})",
        evidence(*(e.frames for e in clear + encrypted)),
    )


def _judge_certificate(tr: Transcript, presented: Presented, expected: ke.TerminateStatus) -> Judgement:
    """Initiate Key Establishment with a bad certificate: Terminate with `expected`, no Initiate Key
    Establishment Response (so no link key can follow); a genuine certificate answered as the control."""
    keys = _key_record(tr)
    attempt = keys.attempts.get(presented.name, [])
    control = keys.attempts.get(Presented.GENUINE.name, [])
    control_ok = bool(_server_frames(_initiate(control), ke.ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE))
    shown = evidence(*(e.frames for e in _initiate(attempt) + _initiate(control)))
    went_on = _server_frames(attempt, ke.ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE)
    terminates = _server_frames(_initiate(attempt), ke.ServerCommand.TERMINATE_KEY_ESTABLISHMENT)
    if not went_on and not terminates and not control_ok and not tr.claims.se_security:
        return Judgement(Verdict.NOT_APPLICABLE, NO_KEY_SERVER, shown, note=NO_KEY_SERVER)
    if went_on:
        return Judgement(
            Verdict.FAIL,
            f"answered Initiate Key Establishment Response to {presented.value}: it went on with key establishment "
            f"(expected Terminate Key Establishment {_status_text(expected)})",
            evidence(*(e.frames for e in attempt)),
            note=f"goes on with key establishment for {presented.value}",
        )
    if not terminates:
        verdict = Verdict.FAIL if control_ok else Verdict.INCONCLUSIVE
        return Judgement(
            verdict,
            f"sent no Terminate Key Establishment to {presented.value} (expected status {_status_text(expected)})"
            + ("" if control_ok else ", and did not answer a genuine certificate either"),
            shown,
        )
    status = raw(terminates[0])[3]
    if status != expected:
        return Judgement(
            Verdict.FAIL,
            f"terminated with {_status_text(status)} when the probe presented {presented.value} (expected "
            f"{_status_text(expected)})",
            shown,
        )
    if not control_ok:
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"terminated with {_status_text(status)}, but answered no Initiate Key Establishment Response to a "
            "genuine certificate either, so the refusal says nothing",
            shown,
        )
    return Judgement(
        Verdict.PASS,
        f"terminated with {_status_text(status)} when the probe presented {presented.value}, sending no Initiate "
        "Key Establishment Response (no link key can follow); answered a genuine certificate with one (control)",
        shown,
    )


def judge_unknown_issuer(tr: Transcript) -> Judgement:
    return _judge_certificate(tr, Presented.UNKNOWN_ISSUER, ke.TerminateStatus.UNKNOWN_ISSUER)


def judge_other_subject(tr: Transcript) -> Judgement:
    return _judge_certificate(tr, Presented.OTHER_SUBJECT, ke.TerminateStatus.BAD_MESSAGE)
