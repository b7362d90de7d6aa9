"""GF(2^m) arithmetic and the sect163k1/sect283k1 group law, checked against OpenSSL (domain parameters, key
pairs, compressed encodings, ECDH) and against a schoolbook/affine reference."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.errors import InputError
from emulator.security.koblitz import (
    INFINITY,
    SECT163K1,
    SECT283K1,
    Curve,
    Point,
    PointError,
    PrivateKey,
    PublicKey,
)

CURVES = [SECT163K1, SECT283K1]
OPENSSL = shutil.which("openssl")


def _curve_available(name: str) -> bool:
    if OPENSSL is None:
        return False
    done = subprocess.run([OPENSSL, "ecparam", "-list_curves"], capture_output=True, text=True, check=False)
    return name in done.stdout


def _needs_openssl(curve: Curve) -> None:
    if not _curve_available(curve.name):
        pytest.skip(f"openssl with {curve.name} is not installed")


def _clmul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def _polymod(r: int, poly: int) -> int:
    while r.bit_length() >= poly.bit_length():
        r ^= poly << (r.bit_length() - poly.bit_length())
    return r


def _ref_multiply(curve: Curve, k: int, p: Point) -> Point:
    """Affine double-and-add: slow, but uses only the textbook chord-and-tangent law."""
    result = INFINITY
    while k:
        if k & 1:
            result = curve.add(result, p)
        p = curve.double(p)
        k >>= 1
    return result


def _hexblock(text: str, label: str) -> int:
    match = re.search(rf"{label}:?\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert match, text
    return int(re.sub(r"[^0-9a-f]", "", match.group(1)), 16)


# --- field ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@settings(max_examples=60)
@given(data=st.data())
def test_field_product_square_and_inverse_agree_with_schoolbook(curve: Curve, data: st.DataObject) -> None:
    f = curve.field
    a = data.draw(st.integers(0, f.mask))
    b = data.draw(st.integers(0, f.mask))
    expected = _polymod(_clmul(a, b), f.polynomial)
    assert f.mul(a, b) == expected
    assert f.sqr(a) == _polymod(_clmul(a, a), f.polynomial)
    if a:
        assert f.mul(a, f.inv(a)) == 1


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_half_trace_solves_the_quadratic(curve: Curve) -> None:
    f = curve.field
    z = 0x1234567890ABCDEF1234567890ABCDEF12345 & f.mask
    c = f.sqr(z) ^ z  # trace 0 by construction
    h = f.half_trace(c)
    assert f.sqr(h) ^ h == c


# --- domain parameters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_domain_parameters_equal_openssl(curve: Curve) -> None:
    _needs_openssl(curve)
    assert OPENSSL is not None
    text = subprocess.run(
        [OPENSSL, "ecparam", "-name", curve.name, "-param_enc", "explicit", "-text", "-noout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert _hexblock(text, "Polynomial") == curve.field.polynomial
    generator = _hexblock(text, r"Generator \(uncompressed\)")
    size = curve.field_bytes
    assert generator == (4 << (16 * size)) | (curve.gx << (8 * size)) | curve.gy
    assert _hexblock(text, "Order") == curve.n
    assert f"Cofactor:  {curve.h} " in text
    assert re.search(rf"A:\s+{curve.a}\b", text) and re.search(rf"B:\s+{curve.b}\b", text)


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_generator_has_order_n(curve: Curve) -> None:
    assert curve.multiply(curve.n, curve.generator) is INFINITY
    assert curve.multiply(curve.n - 1, curve.generator) == curve.negate(curve.generator)
    assert curve.n.bit_length() == {163: 163, 283: 281}[curve.m]


# --- scalar multiplication -----------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_ladder_and_comb_agree_with_affine_double_and_add(curve: Curve, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, 2 * curve.n))
    expected = _ref_multiply(curve, k, curve.generator)
    assert curve.multiply(k, curve.generator) == expected
    assert curve.multiply_generator(k) == expected
    # a point outside the order-n subgroup too: the ladder takes any point on the curve
    other = _some_point(curve, k)
    assert curve.multiply(k % 97 + 1, other) == _ref_multiply(curve, k % 97 + 1, other)


def _some_point(curve: Curve, seed: int) -> Point:
    """Some point on the curve, in general not in the order-n subgroup."""
    x = seed & curve.field.mask
    while True:
        x += 1
        try:
            return curve.decompress(bytes([2]) + x.to_bytes(curve.field_bytes, "big"))
        except PointError:
            continue


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_small_and_edge_scalars(curve: Curve) -> None:
    g = curve.generator
    assert curve.multiply(0, g) is INFINITY
    assert curve.multiply(1, g) == g
    assert curve.multiply(2, g) == curve.double(g)
    assert curve.multiply(-3, g) == curve.negate(_ref_multiply(curve, 3, g))
    assert curve.multiply_generator(curve.n) is INFINITY
    order_two = Point(0, 1)
    assert curve.contains(order_two)
    assert curve.multiply(3, order_two) == order_two
    assert curve.multiply(4, order_two) is INFINITY


# --- encodings and validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_compressed_round_trip_and_bad_encodings(curve: Curve) -> None:
    point = curve.multiply_generator(123456789)
    data = curve.compress(point)
    assert len(data) == curve.point_bytes
    assert curve.decompress(data) == point
    flipped = bytes([data[0] ^ 1]) + data[1:]
    assert curve.decompress(flipped) == curve.negate(point)
    with pytest.raises(PointError, match=f"expected a {curve.point_bytes}-byte compressed"):
        curve.decompress(data[:-1])
    with pytest.raises(PointError, match="prefix 0x04"):
        curve.decompress(b"\x04" + data[1:])
    with pytest.raises(PointError, match="more than"):
        curve.decompress(b"\x02" + b"\xff" * curve.field_bytes)
    bad = _x_off_curve(curve)
    with pytest.raises(PointError, match="is not the x-coordinate") as info:
        curve.decompress(b"\x02" + bad.to_bytes(curve.field_bytes, "big"), "certificate point")
    assert isinstance(info.value, InputError)
    assert str(info.value).startswith("certificate point: ")


def _x_off_curve(curve: Curve) -> int:
    f = curve.field
    for x in range(2, 1000):
        beta = x ^ curve.a ^ f.mul(curve.b, f.sqr(f.inv(x)))
        h = f.half_trace(beta)
        if f.sqr(h) ^ h != beta:
            return x
    raise AssertionError("no x off the curve below 1000")


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_validation_rejects_points_outside_the_subgroup(curve: Curve) -> None:
    g = curve.generator
    assert curve.validate(g) == g
    with pytest.raises(PointError, match="not on"):
        curve.validate(Point(g.x, g.y ^ 1))
    with pytest.raises(PointError, match="infinity"):
        curve.validate(INFINITY)
    with pytest.raises(PointError, match="subgroup"):
        curve.validate(Point(0, 1))
    outside = _some_point(curve, 5)
    if not curve.multiply(curve.n, outside).infinity:
        with pytest.raises(PointError, match="subgroup"):
            PublicKey.from_bytes(curve, curve.compress(outside))
    assert PublicKey.from_bytes(curve, curve.compress(outside), full=False).point == outside


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_private_key_range_and_encoding(curve: Curve) -> None:
    key = PrivateKey.generate(curve)
    assert PrivateKey.from_bytes(curve, key.to_bytes()) == key
    assert len(key.to_bytes()) == {163: 21, 283: 36}[curve.m]
    assert str(key.d) not in repr(key)
    with pytest.raises(PointError, match="out of range"):
        PrivateKey.from_bytes(curve, curve.n.to_bytes(curve.scalar_bytes, "big"))
    with pytest.raises(PointError, match="out of range"):
        PrivateKey(curve, 0)
    with pytest.raises(PointError, match="bytes"):
        PrivateKey.from_bytes(curve, b"\x01")


# --- OpenSSL -------------------------------------------------------------------------------------------------
def _openssl_key(curve: Curve, path: Path) -> tuple[int, Point]:
    assert OPENSSL is not None
    subprocess.run(
        [
            OPENSSL,
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            f"ec_paramgen_curve:{curve.name}",
            "-pkeyopt",
            "ec_param_enc:named_curve",
            "-out",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    text = subprocess.run(
        [OPENSSL, "pkey", "-in", str(path), "-text", "-noout"], check=True, capture_output=True, text=True
    ).stdout
    d = _hexblock(text, "priv")
    pub = _hexblock(text, "pub")
    size = curve.field_bytes
    assert pub >> (16 * size) == 4
    return d, Point((pub >> (8 * size)) & ((1 << (8 * size)) - 1), pub & ((1 << (8 * size)) - 1))


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_key_pairs_compression_and_ecdh_agree_with_openssl(curve: Curve, tmp_path: Path) -> None:
    _needs_openssl(curve)
    assert OPENSSL is not None
    d_a, q_a = _openssl_key(curve, tmp_path / "a.pem")
    d_b, q_b = _openssl_key(curve, tmp_path / "b.pem")
    assert PrivateKey(curve, d_a).public_key().point == q_a
    assert curve.multiply(d_b, curve.generator) == q_b
    compressed = subprocess.run(
        [OPENSSL, "ec", "-in", str(tmp_path / "a.pem"), "-pubout", "-conv_form", "compressed", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout[-curve.point_bytes :]
    assert curve.compress(q_a) == compressed
    assert curve.decompress(compressed) == q_a
    subprocess.run(
        [OPENSSL, "pkey", "-in", str(tmp_path / "b.pem"), "-pubout", "-out", str(tmp_path / "b.pub")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            OPENSSL,
            "pkeyutl",
            "-derive",
            "-inkey",
            str(tmp_path / "a.pem"),
            "-peerkey",
            str(tmp_path / "b.pub"),
            "-out",
            str(tmp_path / "z.bin"),
        ],
        check=True,
        capture_output=True,
    )
    shared = curve.multiply(d_a, q_b)
    assert shared.x.to_bytes(curve.field_bytes, "big") == (tmp_path / "z.bin").read_bytes()
    assert shared == curve.multiply(d_b, q_a)
