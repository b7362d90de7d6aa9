"""Binary-field (GF(2^m)) arithmetic and the two Koblitz curves of Smart Energy key establishment.

Crypto suite 1 uses sect163k1 and suite 2 uses sect283k1 (SEC 2 v1 §3.2/§3.4; Smart Energy 07-5356 §C.4). No
maintained Python package does point arithmetic on binary curves (`cryptography` has no SECT curves), so it is
done here with Python integers as GF(2) polynomials. The domain parameters below are pasted from OpenSSL 3.0
(`openssl ecparam -name sect163k1 -param_enc explicit -text -noout`, and the same for sect283k1) and checked at
import: G lies on the curve.

Speed (measured by `tools/bench_cbke.py`): a field product uses a 4-bit comb over the multiplier's bytes with a
16-entry table of shifted multiplicands, reduced by shifts for the curve's pentanomial; a square spreads the bits
with one base-4 parse. Scalar multiplication is the López–Dahab Montgomery ladder in projective x-only
coordinates (5 products and 4 squares per bit, no inversion) with the y-coordinate recovered at the end
(Hankerson, Menezes, Vanstone, "Guide to Elliptic Curve Cryptography", Alg. 3.40); multiples of G use a
precomputed table of affine points and projective mixed additions. Nothing here is constant-time: the module
serves an emulator and a test bench, not a production device.

Points travel in the SEC 1 §2.3.3 compressed form (02/03 and x), decompressed with the half-trace (m is odd).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from emulator.errors import InputError


class PointError(InputError):
    """Bytes or coordinates that are not a valid point, or a key outside its curve's range."""


class BinaryField:
    """GF(2^m) modulo a pentanomial x^m + x^k1 + x^k2 + x^k3 + 1 with k1 > k2 > k3 and k1 < m/2, so two folding
    steps reduce any product."""

    __slots__ = ("mask", "mul", "nbytes", "polynomial", "sqr", "tail")

    def __init__(self, m: int, tail: tuple[int, int, int]) -> None:
        k1, k2, k3 = tail
        if not m > 2 * k1 > 2 * k2 > 2 * k3 > 0:
            raise ValueError(f"unsupported field polynomial x^{m} + x^{k1} + x^{k2} + x^{k3} + 1")
        self.tail = tail
        self.polynomial = (1 << m) | (1 << k1) | (1 << k2) | (1 << k3) | 1
        self.mask = mask = (1 << m) - 1
        self.nbytes = nbytes = (m + 7) // 8

        def reduce(r: int) -> int:
            hi = r >> m
            r = (r & mask) ^ hi ^ (hi << k3) ^ (hi << k2) ^ (hi << k1)
            hi = r >> m
            return (r & mask) ^ hi ^ (hi << k3) ^ (hi << k2) ^ (hi << k1)

        def mul(a: int, b: int) -> int:
            a2 = a << 1
            a3 = a2 ^ a
            a4 = a << 2
            a5 = a4 ^ a
            a6 = a4 ^ a2
            a7 = a6 ^ a
            a8 = a << 3
            table = (0, a, a2, a3, a4, a5, a6, a7, a8, a8 ^ a, a8 ^ a2, a8 ^ a3, a8 ^ a4, a8 ^ a5, a8 ^ a6, a8 ^ a7)
            r = 0
            for byte in b.to_bytes(nbytes, "big"):
                r = (r << 8) ^ (table[byte >> 4] << 4) ^ table[byte & 15]
            return reduce(r)

        def sqr(a: int) -> int:
            # squaring in GF(2)[x] spreads the bits apart: the binary digits of a, read in base 4
            return reduce(int(bin(a)[2:], 4))

        self.mul: Callable[[int, int], int] = mul
        self.sqr: Callable[[int], int] = sqr

    def inv(self, a: int) -> int:
        """The inverse of a non-zero element by the binary-polynomial extended Euclid algorithm (Guide Alg. 2.48)."""
        if a == 0:
            raise ZeroDivisionError("0 has no inverse in GF(2^m)")
        u, v, g1, g2 = a, self.polynomial, 1, 0
        while u != 1:
            j = u.bit_length() - v.bit_length()
            if j < 0:
                u, v, g1, g2 = v, u, g2, g1
                j = -j
            u ^= v << j
            g1 ^= g2 << j
        return g1

    def half_trace(self, c: int) -> int:
        """H(c) = sum of c^(4^i) for i = 0..(m-1)/2; for odd m and trace(c) = 0, z = H(c) solves z^2 + z = c."""
        sqr = self.sqr
        h = c
        for _ in range((self.mask.bit_length() - 1) // 2):
            h = sqr(sqr(h)) ^ c
        return h


@dataclass(frozen=True, slots=True)
class Point:
    """An affine point (x, y) as field elements (ints), or the point at infinity (`INFINITY`)."""

    x: int
    y: int
    infinity: bool = False


INFINITY = Point(0, 0, infinity=True)
_COMB_WIDTH = 4


@dataclass(frozen=True)
class Curve:
    """A binary Weierstrass curve y^2 + xy = x^3 + a x^2 + b over GF(2^m), with a base point G of prime order n
    and cofactor h."""

    name: str
    m: int
    tail: tuple[int, int, int]
    a: int
    b: int
    gx: int
    gy: int
    n: int
    h: int
    field: BinaryField = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", BinaryField(self.m, self.tail))
        if not self.contains(self.generator):
            raise ValueError(f"{self.name}: the base point is not on the curve")

    # sizes -------------------------------------------------------------------------------------------------
    @property
    def field_bytes(self) -> int:
        return self.field.nbytes

    @property
    def point_bytes(self) -> int:
        """Length of a SEC 1 compressed point: the 02/03 prefix and x."""
        return 1 + self.field.nbytes

    @property
    def scalar_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @property
    def generator(self) -> Point:
        return Point(self.gx, self.gy)

    # group law (affine) ------------------------------------------------------------------------------------
    def contains(self, p: Point) -> bool:
        """True when p is the point at infinity or satisfies the curve equation."""
        if p.infinity:
            return True
        if not (0 <= p.x <= self.field.mask and 0 <= p.y <= self.field.mask):
            return False
        f = self.field
        x2 = f.sqr(p.x)
        lhs = f.sqr(p.y) ^ f.mul(p.x, p.y)
        rhs = f.mul(x2, p.x) ^ (x2 if self.a else 0) ^ self.b
        return lhs == rhs

    def negate(self, p: Point) -> Point:
        return p if p.infinity else Point(p.x, p.x ^ p.y)

    def add(self, p: Point, q: Point) -> Point:
        """p + q in affine coordinates (one inversion)."""
        if p.infinity:
            return q
        if q.infinity:
            return p
        if p.x == q.x:
            return self.double(p) if p.y == q.y else INFINITY
        f = self.field
        lam = f.mul(p.y ^ q.y, f.inv(p.x ^ q.x))
        x3 = f.sqr(lam) ^ lam ^ p.x ^ q.x ^ self.a
        return Point(x3, f.mul(lam, p.x ^ x3) ^ x3 ^ p.y)

    def double(self, p: Point) -> Point:
        if p.infinity or p.x == 0:
            return INFINITY
        f = self.field
        lam = p.x ^ f.mul(p.y, f.inv(p.x))
        x3 = f.sqr(lam) ^ lam ^ self.a
        return Point(x3, f.sqr(p.x) ^ f.mul(lam, x3) ^ x3)

    # scalar multiplication ---------------------------------------------------------------------------------
    def multiply(self, k: int, p: Point) -> Point:
        """k·p for any integer k and any point p on the curve (Montgomery ladder, x-only López–Dahab)."""
        if k < 0:
            return self.multiply(-k, self.negate(p))
        if k == 0 or p.infinity:
            return INFINITY
        if p.x == 0:  # the point of order 2
            return p if k & 1 else INFINITY
        f = self.field
        mul, sqr = f.mul, f.sqr
        x = p.x
        x1, z1 = x, 1
        z2 = sqr(x)
        x2 = sqr(z2) ^ self.b
        for bit in bin(k)[3:]:
            # (x1:z1) = j·p and (x2:z2) = (j+1)·p; one Madd and one Mdouble per bit
            t1 = mul(x1, z2)
            t2 = mul(x2, z1)
            zs = sqr(t1 ^ t2)
            xs = mul(x, zs) ^ mul(t1, t2)
            if bit == "1":
                x1, z1 = xs, zs
                xx, zz = sqr(x2), sqr(z2)
                x2, z2 = sqr(xx ^ zz) if self.b == 1 else sqr(xx) ^ mul(self.b, sqr(zz)), mul(xx, zz)
            else:
                x2, z2 = xs, zs
                xx, zz = sqr(x1), sqr(z1)
                x1, z1 = sqr(xx ^ zz) if self.b == 1 else sqr(xx) ^ mul(self.b, sqr(zz)), mul(xx, zz)
        return self._recover_y(p, x1, z1, x2, z2)

    def _recover_y(self, p: Point, x1: int, z1: int, x2: int, z2: int) -> Point:
        """The affine k·p from the ladder's x-only pair (Guide Alg. 3.40, step 3, "Mxy")."""
        if z1 == 0:
            return INFINITY
        if z2 == 0:
            return self.negate(p)
        f = self.field
        mul = f.mul
        x, y = p.x, p.y
        z1z2 = mul(z1, z2)
        inv = f.inv(mul(x, z1z2))
        x3 = mul(x1, mul(inv, mul(x, z2)))  # x1 / z1
        t = mul(x1 ^ mul(x, z1), x2 ^ mul(x, z2)) ^ mul(f.sqr(x) ^ y, z1z2)
        y3 = mul(mul(x ^ x3, t), inv) ^ y
        return Point(x3, y3)

    def multiply_generator(self, k: int) -> Point:
        """k·G with a precomputed comb table (built on first use): one mixed addition per 4 bits of k."""
        k %= self.n
        if k == 0:
            return INFINITY
        table = self._generator_table
        f = self.field
        mul, sqr = f.mul, f.sqr
        a = self.a
        # López–Dahab projective (X, Y, Z) with x = X/Z, y = Y/Z^2; start at infinity (Z = 0)
        big_x, big_y, big_z = 1, 0, 0
        digits = k.to_bytes(self._comb_digits_bytes, "little")
        for index, byte in enumerate(digits):
            for nibble, row in ((byte & 15, 2 * index), (byte >> 4, 2 * index + 1)):
                if nibble == 0:
                    continue
                qx, qy = table[row][nibble]
                if big_z == 0:
                    big_x, big_y, big_z = qx, qy, 1
                    continue
                big_x, big_y, big_z = _mixed_add(mul, sqr, a, big_x, big_y, big_z, qx, qy, self)
        if big_z == 0:
            return INFINITY
        zi = f.inv(big_z)
        return Point(mul(big_x, zi), mul(big_y, sqr(zi)))

    @cached_property
    def _comb_digits_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @cached_property
    def _generator_table(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Row i holds j·16^i·G (affine) for j = 0..15; built once per curve with affine additions."""
        rows: list[tuple[tuple[int, int], ...]] = []
        base = self.generator
        for _ in range(2 * self._comb_digits_bytes):
            row = [(0, 0), (base.x, base.y)]
            acc = base
            for _ in range(2, 1 << _COMB_WIDTH):
                acc = self.add(acc, base)
                row.append((acc.x, acc.y))
            rows.append(tuple(row))
            base = self.add(acc, base)  # 16·base
        return tuple(rows)

    # encodings ---------------------------------------------------------------------------------------------
    def compress(self, p: Point) -> bytes:
        """SEC 1 §2.3.3 compressed encoding: 02 or 03 (the low bit of y/x; 0 when x = 0) followed by x."""
        if p.infinity:
            raise PointError(f"{self.name}: the point at infinity has no compressed encoding")
        f = self.field
        bit = 0 if p.x == 0 else f.mul(p.y, f.inv(p.x)) & 1
        return bytes([2 | bit]) + p.x.to_bytes(f.nbytes, "big")

    def decompress(self, data: bytes, what: str = "point") -> Point:
        """The point of a SEC 1 compressed encoding (§2.3.4), checked to lie on the curve."""
        f = self.field
        if len(data) != self.point_bytes:
            raise PointError(
                f"{what}: {len(data)} bytes (expected a {self.point_bytes}-byte compressed {self.name} point)"
            )
        if data[0] not in (2, 3):
            raise PointError(f"{what}: prefix 0x{data[0]:02X} (expected 0x02 or 0x03, a compressed {self.name} point)")
        x = int.from_bytes(data[1:], "big")
        if x > f.mask:
            raise PointError(f"{what}: x has more than {self.m} bits (expected a {self.name} field element)")
        if x == 0:
            return Point(0, self._sqrt_b())
        beta = x ^ self.a ^ f.mul(self.b, f.sqr(f.inv(x)))
        z = f.half_trace(beta)
        if f.sqr(z) ^ z != beta:
            raise PointError(f"{what}: x = {data[1:].hex().upper()} is not the x-coordinate of a {self.name} point")
        if (z & 1) != (data[0] & 1):
            z ^= 1
        return Point(x, f.mul(x, z))

    def _sqrt_b(self) -> int:
        r = self.b
        for _ in range(self.m - 1):
            r = self.field.sqr(r)
        return r

    def validate(self, p: Point, what: str = "point", *, full: bool = True) -> Point:
        """SEC 1 §3.2.2 public-key validation: not infinity, on the curve and (when `full`) n·p = O; returns p."""
        if p.infinity:
            raise PointError(f"{what}: is the point at infinity (expected a {self.name} public key)")
        if not self.contains(p):
            raise PointError(f"{what}: ({p.x:X}, {p.y:X}) is not on {self.name}")
        if full and not self.multiply(self.n, p).infinity:
            raise PointError(f"{what}: is not in the subgroup of order n of {self.name} (expected n·Q = O)")
        return p

    def scalar_from_bytes(self, data: bytes, what: str = "private key") -> int:
        if len(data) != self.scalar_bytes:
            raise PointError(f"{what}: {len(data)} bytes (expected {self.scalar_bytes} bytes for {self.name})")
        d = int.from_bytes(data, "big")
        if not 0 < d < self.n:
            raise PointError(f"{what}: out of range (expected 1 <= d < n of {self.name})")
        return d

    def random_scalar(self) -> int:
        """A uniformly random d with 1 <= d < n, from the operating system's CSPRNG."""
        return 1 + secrets.randbelow(self.n - 1)


def _mixed_add(
    mul: Callable[[int, int], int],
    sqr: Callable[[int], int],
    a: int,
    x1: int,
    y1: int,
    z1: int,
    x2: int,
    y2: int,
    curve: Curve,
) -> tuple[int, int, int]:
    """(X1:Y1:Z1) + (x2, y2) in López–Dahab coordinates (Guide Alg. 3.25): A = Y1 + y2·Z1², B = X1 + x2·Z1,
    C = Z1·B, D = B²·(C + a·Z1²), Z3 = C², E = A·C, X3 = A² + D + E, Y3 = (E + Z3)(X3 + x2·Z3) + (x2 + y2)·Z3²."""
    z1s = sqr(z1)
    b = mul(z1, x2) ^ x1
    a_ = mul(z1s, y2) ^ y1
    if b == 0:
        if a_ == 0:  # the same point: double (x2, y2) affinely and continue projectively
            d2 = curve.double(Point(x2, y2))
            return (1, 0, 0) if d2.infinity else (d2.x, d2.y, 1)
        return 1, 0, 0  # p + (-p)
    c = mul(z1, b)
    d = mul(sqr(b), c ^ z1s if a else c)
    z3 = sqr(c)
    e = mul(a_, c)
    x3 = sqr(a_) ^ d ^ e
    y3 = mul(e ^ z3, x3 ^ mul(x2, z3)) ^ mul(x2 ^ y2, sqr(z3))
    return x3, y3, z3


# Domain parameters pasted from `openssl ecparam -name <curve> -param_enc explicit -text -noout` (OpenSSL 3.0.22).
SECT163K1 = Curve(
    name="sect163k1",
    m=163,
    tail=(7, 6, 3),  # polynomial 0x0800000000000000000000000000000000000000C9
    a=1,
    b=1,
    gx=0x02FE13C0537BBC11ACAA07D793DE4E6D5E5C94EEE8,
    gy=0x0289070FB05D38FF58321F2E800536D538CCDAA3D9,
    n=0x04000000000000000000020108A2E0CC0D99F8A5EF,
    h=2,
)
SECT283K1 = Curve(
    name="sect283k1",
    m=283,
    tail=(12, 7, 5),  # polynomial 0x0800...0010A1
    a=0,
    b=1,
    gx=0x0503213F78CA44883F1A3B8162F188E553CD265F23C1567A16876913B0C2AC2458492836,
    gy=0x01CCDA380F1C9E318D90F95D07E5426FE87E45C0E8184698E45962364E34116177DD2259,
    n=0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFE9AE2ED07577265DFF7F94451E061E163C61,
    h=4,
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key: a point of the order-n subgroup of `curve`."""

    curve: Curve
    point: Point

    def to_bytes(self) -> bytes:
        return self.curve.compress(self.point)

    @classmethod
    def from_bytes(cls, curve: Curve, data: bytes, what: str = "public key", *, full: bool = True) -> PublicKey:
        """Decompress and validate (SEC 1 §3.2.2; `full` adds the n·Q = O check, one scalar multiplication)."""
        return cls(curve, curve.validate(curve.decompress(data, what), what, full=full))


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A private key d with 1 <= d < n on `curve` (d is left out of the repr)."""

    curve: Curve
    d: int = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.d < self.curve.n:
            raise PointError(f"private key out of range (expected 1 <= d < n of {self.curve.name})")

    @classmethod
    def generate(cls, curve: Curve) -> PrivateKey:
        return cls(curve, curve.random_scalar())

    @classmethod
    def from_bytes(cls, curve: Curve, data: bytes, what: str = "private key") -> PrivateKey:
        return cls(curve, curve.scalar_from_bytes(data, what))

    def to_bytes(self) -> bytes:
        return self.d.to_bytes(self.curve.scalar_bytes, "big")

    def public_key(self) -> PublicKey:
        return PublicKey(self.curve, self.curve.multiply_generator(self.d))
