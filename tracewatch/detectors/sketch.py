"""A mergeable quantile sketch with a relative-error guarantee (DDSketch-style).

Values are mapped to logarithmic buckets: with ``gamma = (1 + a) / (1 - a)`` a
value ``x`` goes to key ``ceil(log_gamma(x))`` and the bucket answers with
``2 * gamma**key / (gamma + 1)``, which is within ``a * x`` of every value in the
bucket.  Counts live in one dense ``int64`` array indexed by ``key - offset``.

Why not the ``ddsketch`` package: it adds one value at a time in pure Python
(a ``math.log`` and a dict/list update per value), which is the hot path of the
stream workers and of replay.  Here a whole batch is inserted with array
operations (``np.log2`` + ``np.bincount``): about 20-30x faster than
``DDSketch.add`` on a 100 000-value batch when measured here.  The key function is the one of
DDSketch's ``LogarithmicMapping`` (``ceil(log2(x) * ln 2 / log1p(2a / (1 - a)))``,
same representative value), so answers are comparable with DDSketch and with
ClickHouse's ``quantilesDD``.  numpy's vectorised ``log2`` may differ from libm
in the last ulp, so a value lying exactly on a bucket boundary can land one key
apart; both keys satisfy the bound.

The sum is kept exactly (an integer number of ``2**-1074``, the smallest
subnormal), so merging is associative and commutative bit for bit: partials
merged in any order, on any worker, give identical sketches.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["QuantileSketch"]

_Counts = NDArray[np.int64]

#: Serialisation format version (first byte of ``to_bytes``).
_VERSION = 1
#: version, flags, relative_accuracy, min_value, max_bins, count, zero_count, min, max,
#: key of the first stored bucket, number of stored buckets, and the exact sum as
#: ``significand << shift`` units: shift, byte length of the significand.
_HEADER = struct.Struct("<BBddqqqddqIHH")
_PAYLOAD_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")
_FLAG_ZLIB = 1
_FLAG_COLLAPSED = 2
_KNOWN_FLAGS = _FLAG_ZLIB | _FLAG_COLLAPSED

#: Every finite double is an integer multiple of 2**-1074 (the smallest subnormal):
#: the exact sum is kept as that integer.
_SUM_SHIFT = 1074
_FRACTION_BITS = 52
_FRACTION_MASK = (1 << _FRACTION_BITS) - 1
_EXPONENT_MASK = 0x7FF
_LOW_BITS = 26
_LOW_MASK = (1 << _LOW_BITS) - 1
#: Values per insertion chunk: small enough that temporaries stay in cache and
#: out of mmap-backed allocations (measured ~3x faster than whole-batch arrays),
#: and that float64 per-exponent sums of 26-bit integers stay exact (< 2**53).
_CHUNK = 16_384


def _exact_sum_units(values: NDArray[np.float64]) -> int:
    """Return ``sum(values)`` of non-negative finite doubles exactly, in units of 2**-1074.

    Reads the IEEE bits: a double with biased exponent ``E`` and fraction ``f`` is
    ``(2**52 + f) * 2**(E - 1)`` units (``f`` units when subnormal, ``E == 0``).
    Fractions are summed per exponent in two 26-bit halves, exact in float64 for
    one chunk; only the few distinct exponents are combined as Python ints.
    """
    bits = values.view(np.int64)
    exponent = (bits >> _FRACTION_BITS) & _EXPONENT_MASK  # mask drops the sign of -0.0
    fraction = bits & _FRACTION_MASK
    count = np.bincount(exponent)
    high = np.bincount(exponent, weights=fraction >> _LOW_BITS)
    low = np.bincount(exponent, weights=fraction & _LOW_MASK)
    total = 0
    for biased in np.flatnonzero(count).tolist():
        mantissas = (int(high[biased]) << _LOW_BITS) + int(low[biased])
        if biased:
            mantissas += int(count[biased]) << _FRACTION_BITS
        total += mantissas << max(biased - 1, 0)
    return total


def _exact_units(value: float) -> int:
    """``value`` (non-negative, finite) in units of 2**-1074, exactly."""
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_SUM_SHIFT - denominator.bit_length() + 1)


def _units_to_float(units: int) -> float:
    """Correctly rounded float of ``units * 2**-1074`` (``inf`` past the float range)."""
    try:
        return units / (1 << _SUM_SHIFT)
    except OverflowError:
        return math.inf


def _inflate(payload: bytes, limit: int) -> bytes:
    """Decompress at most ``limit + 1`` bytes so a corrupt length cannot exhaust memory."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, limit + 1)
    if not inflater.eof or inflater.unconsumed_tail:
        raise ValueError("corrupt QuantileSketch encoding: bad compressed counts")
    return out


def _raise_invalid(batch: NDArray[np.float64]) -> NoReturn:
    bad = ~(np.isfinite(batch) & (batch >= 0.0))
    first = int(np.argmax(bad))
    raise ValueError(
        f"QuantileSketch values must be finite and non-negative: {int(bad.sum())} "
        f"invalid value(s), first {float(batch[first])!r} at index {first}"
    )


class QuantileSketch:
    """Mergeable quantile sketch of non-negative values with relative error ``a``.

    Guarantee: let ``x_lower(q)`` be ``np.quantile(x, q, method="lower")`` of all
    values added so far (directly or through ``merge``), i.e. the order statistic
    at 0-based rank ``floor(q * (count - 1))``.  While no bucket has been collapsed
    (``collapsed`` is False), for every ``q`` in [0, 1]::

        |quantile(q) - x_lower(q)| <= relative_accuracy * x_lower(q)

    for values that are 0 or at least ``min_value``.  Values below ``min_value``
    (including 0) are counted in a zero bucket answered as 0, then clamped to
    ``[min, max]``, so they are off by less than ``min_value`` in absolute terms.
    Answers are always clamped to the exact ``[min, max]``; ``count``, ``sum``,
    ``min`` and ``max`` are exact.

    Memory is bounded by ``max_bins`` buckets.  When the range of keys would need
    more, the lowest buckets are collapsed into the lowest kept one (as DDSketch's
    ``CollapsingLowestDenseStore`` does); the bound then holds only for quantiles
    whose true value lies above the collapsed range, i.e. above the lowest kept
    bucket ``(gamma**(k-1), gamma**k]``.  With the defaults (1 %, 4096 bins) the
    kept range spans a factor of about 10**35 before anything collapses.
    """

    def __init__(
        self, relative_accuracy: float = 0.01, min_value: float = 1e-9, max_bins: int = 4096
    ) -> None:
        """Configure the bound; arguments are stored under their own names for cloning."""
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if not (math.isfinite(min_value) and min_value > 0.0):
            raise ValueError(f"min_value must be a positive finite float, got {min_value!r}")
        if isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < 1:
            raise ValueError(f"max_bins must be a positive int, got {max_bins!r}")
        self.relative_accuracy = float(relative_accuracy)
        self.min_value = float(min_value)
        self.max_bins = max_bins
        gamma_mantissa = 2.0 * self.relative_accuracy / (1.0 - self.relative_accuracy)
        self._gamma = 1.0 + gamma_mantissa
        # Same constants as ddsketch.mapping.LogarithmicMapping.
        self._multiplier = math.log(2.0) / math.log1p(gamma_mantissa)
        self._value_factor = 2.0 / (1.0 + self._gamma)
        self._counts: _Counts = np.zeros(0, dtype=np.int64)
        self._offset = 0  # key of self._counts[0]
        self._zero_count = 0
        self._count = 0
        self._sum_units = 0
        self._min = math.inf
        self._max = -math.inf
        self._collapsed = False

    # -- read-only state -------------------------------------------------------------

    @property
    def count(self) -> int:
        """Exact number of values added."""
        return self._count

    @property
    def sum(self) -> float:
        """Exact sum of the values, correctly rounded to a float."""
        return _units_to_float(self._sum_units)

    @property
    def min(self) -> float | None:
        """Exact smallest value, or None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """Exact largest value, or None when empty."""
        return self._max if self._count else None

    @property
    def collapsed(self) -> bool:
        """True once low buckets were merged to respect ``max_bins`` (bound then partial)."""
        return self._collapsed

    def __len__(self) -> int:
        return self._count

    # -- insertion -------------------------------------------------------------------

    def add(self, values: ArrayLike) -> None:
        """Add a batch of non-negative finite values with array operations.

        The batch is validated as a whole first, so a bad value leaves the sketch
        unchanged.
        """
        batch = np.asarray(values, dtype=np.float64).ravel()
        if batch.size == 0:
            return
        low, high = float(batch.min()) + 0.0, float(batch.max())  # + 0.0: -0.0 -> 0.0
        if not (low >= 0.0 and high < math.inf):  # NaN fails both comparisons
            _raise_invalid(batch)
        for start in range(0, batch.size, _CHUNK):
            self._add_chunk(batch[start : start + _CHUNK])
        self._count += batch.size
        self._min = min(self._min, low)
        self._max = max(self._max, high)

    def _add_chunk(self, chunk: NDArray[np.float64]) -> None:
        positive = chunk[chunk >= self.min_value]
        if positive.size:
            keys = np.log2(positive)
            keys *= self._multiplier
            self._add_keys(np.ceil(keys, out=keys).astype(np.int64))
        self._zero_count += chunk.size - positive.size
        self._sum_units += _exact_sum_units(chunk)

    def add_one(self, value: float) -> None:
        """Add one value without array set-up; same keys and state as ``add([value])``."""
        v = float(value) + 0.0  # -0.0 -> 0.0
        if not 0.0 <= v < math.inf:
            _raise_invalid(np.array([v]))
        if v >= self.min_value:
            # numpy scalar ops run the same ufunc loops as ``add``, hence the same key.
            key = int(np.ceil(np.log2(np.float64(v)) * self._multiplier))
            index = key - self._offset
            if self._counts.size and 0 <= index < self._counts.size:
                self._counts[index] += 1
            else:
                self._add_block(key, np.ones(1, dtype=np.int64))
        else:
            self._zero_count += 1
        self._count += 1
        self._sum_units += _exact_units(v)
        self._min = min(self._min, v)
        self._max = max(self._max, v)

    def _add_keys(self, keys: _Counts) -> None:
        low, high = int(keys.min()), int(keys.max())
        if high - low + 1 > self.max_bins:
            # Pre-collapse so bincount never allocates more than max_bins entries.
            low = high - self.max_bins + 1
            np.maximum(keys, low, out=keys)
            self._collapsed = True
        self._add_block(low, np.bincount(keys - low).astype(np.int64, copy=False))

    def _add_block(self, low: int, block: _Counts) -> None:
        """Add dense counts for keys ``low .. low + len(block) - 1`` (ends non-zero)."""
        self._reserve(low, low + block.size - 1)
        cut = self._offset - low
        if cut > 0:  # keys below the lowest kept one collapse into it
            self._counts[0] += block[:cut].sum()
            block, low = block[cut:], self._offset
        start = low - self._offset
        self._counts[start : start + block.size] += block

    def _reserve(self, low: int, high: int) -> None:
        """Make the store cover keys up to ``high`` and down to ``low`` or the collapse floor.

        The floor is ``highest key - max_bins + 1``; counts below it are folded into
        it.  The result depends only on the keys ever seen, not on their order,
        which keeps ``merge`` order independent.
        """
        top = self._offset + self._counts.size - 1
        if self._counts.size:
            if self._offset <= low and high <= top:
                return
            low, high = min(low, self._offset), max(high, top)
        floor = max(low, high - self.max_bins + 1)
        counts = np.zeros(high - floor + 1, dtype=np.int64)
        if self._counts.size:
            keep = max(floor - self._offset, 0)
            counts[0] += self._counts[:keep].sum()
            src_low = self._offset + keep
            if src_low <= top:
                counts[src_low - floor : top - floor + 1] += self._counts[keep:]
        if floor > low:
            self._collapsed = True
        self._counts, self._offset = counts, floor

    # -- merging ---------------------------------------------------------------------

    def merge(self, other: QuantileSketch) -> None:
        """Fold ``other`` into this sketch; equal to having added its values here."""
        if not isinstance(other, QuantileSketch):
            raise TypeError(f"can only merge a QuantileSketch, got {type(other).__name__}")
        if other.relative_accuracy != self.relative_accuracy or other.min_value != self.min_value:
            raise ValueError(
                "cannot merge sketches with different parameters: "
                f"relative_accuracy {self.relative_accuracy} vs {other.relative_accuracy}, "
                f"min_value {self.min_value} vs {other.min_value}"
            )
        if not other._count:
            return
        low, block = other._nonempty()
        if block.size:
            self._add_block(low, block.copy())
        self._collapsed = self._collapsed or other._collapsed
        self._zero_count += other._zero_count
        self._count += other._count
        self._sum_units += other._sum_units
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def _nonempty(self) -> tuple[int, _Counts]:
        """Offset and counts of the non-empty key range (a view)."""
        nonzero = np.flatnonzero(self._counts)
        if nonzero.size == 0:
            return 0, self._counts[:0]
        first, last = int(nonzero[0]), int(nonzero[-1])
        return self._offset + first, self._counts[first : last + 1]

    # -- queries ---------------------------------------------------------------------

    def quantile(self, q: float) -> float | None:
        """Value at rank ``floor(q * (count - 1))`` within the bound; None when empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Several quantiles from one cumulative sum over the buckets."""
        probs = [float(q) for q in qs]
        if not all(0.0 <= q <= 1.0 for q in probs):  # also rejects NaN
            raise ValueError(f"quantiles must be in [0, 1], got {probs!r}")
        if not self._count:
            return [None] * len(probs)
        # Same expression as numpy's method="lower": floor((n - 1) * q).
        ranks = [math.floor((self._count - 1) * q) - self._zero_count for q in probs]
        cumulative = np.cumsum(self._counts)
        indexes = np.searchsorted(cumulative, ranks, side="right").tolist()
        answers: list[float | None] = []
        for rank, index in zip(ranks, indexes, strict=True):
            value = 0.0 if rank < 0 else self._key_value(self._offset + index)
            answers.append(min(max(value, self._min), self._max))
        return answers

    def _key_value(self, key: int) -> float:
        """Bucket representative ``2 * gamma**key / (gamma + 1)``, as DDSketch computes it."""
        try:
            return float(2.0 ** (key / self._multiplier) * self._value_factor)
        except OverflowError:  # gamma**key past the float range for the top bucket
            return math.inf

    # -- copying, equality, serialisation --------------------------------------------

    def copy(self) -> QuantileSketch:
        """Independent copy (the bucket array is not shared)."""
        clone = type(self)(self.relative_accuracy, self.min_value, self.max_bins)
        self._copy_state_to(clone)
        return clone

    def _copy_state_to(self, clone: QuantileSketch) -> None:
        clone._counts = self._counts.copy()
        clone._offset = self._offset
        clone._zero_count = self._zero_count
        clone._count = self._count
        clone._sum_units = self._sum_units
        clone._min, clone._max = self._min, self._max
        clone._collapsed = self._collapsed

    def _state(self) -> tuple[object, ...]:
        low, block = self._nonempty()
        return (
            self.relative_accuracy,
            self.min_value,
            self.max_bins,
            self._count,
            self._zero_count,
            self._sum_units,
            self._min,
            self._max,
            self._collapsed,
            low,
            block.tobytes(),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(relative_accuracy={self.relative_accuracy!r}, "
            f"min_value={self.min_value!r}, max_bins={self.max_bins!r}, count={self._count})"
        )

    def to_bytes(self) -> bytes:
        """Compact, versioned encoding: header, exact sum, counts of the non-empty range, CRC.

        Counts are little-endian int64, zlib-compressed when that is smaller.
        """
        low, block = self._nonempty()
        raw = block.astype("<i8", copy=False).tobytes()
        packed = zlib.compress(raw, 6)
        flags = _FLAG_COLLAPSED if self._collapsed else 0
        if len(packed) < len(raw):
            raw, flags = packed, flags | _FLAG_ZLIB
        sum_shift = max((self._sum_units & -self._sum_units).bit_length() - 1, 0)
        significand = self._sum_units >> sum_shift
        sum_bytes = significand.to_bytes((significand.bit_length() + 7) // 8, "little")
        header = _HEADER.pack(
            _VERSION,
            flags,
            self.relative_accuracy,
            self.min_value,
            self.max_bins,
            self._count,
            self._zero_count,
            self._min,
            self._max,
            low,
            block.size,
            sum_shift,
            len(sum_bytes),
        )
        body = header + sum_bytes + _PAYLOAD_LEN.pack(len(raw)) + raw
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        """Decode ``to_bytes`` output; raise ValueError on any corrupt or foreign input."""
        data = bytes(data)
        if not data:
            raise ValueError("empty QuantileSketch encoding")
        if data[0] != _VERSION:
            raise ValueError(f"unsupported QuantileSketch encoding version {data[0]}")
        if len(data) < _HEADER.size + _PAYLOAD_LEN.size + _CRC.size:
            raise ValueError("truncated QuantileSketch encoding")
        body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise ValueError("corrupt QuantileSketch encoding (checksum mismatch)")
        try:
            return cls._decode(body)
        except (struct.error, zlib.error, OverflowError) as exc:
            raise ValueError(f"corrupt QuantileSketch encoding: {exc}") from exc

    @classmethod
    def _decode(cls, body: bytes) -> QuantileSketch:
        fields = _HEADER.unpack_from(body)
        _, flags, accuracy, min_value, max_bins, count, zeros, vmin, vmax = fields[:9]
        low, n_bins, sum_shift, sum_len = fields[9:]
        if flags & ~_KNOWN_FLAGS:
            raise ValueError(f"unknown QuantileSketch flags {flags:#x}")
        sketch = cls(accuracy, min_value, max_bins)
        if n_bins > max_bins:
            raise ValueError("corrupt QuantileSketch encoding: more buckets than max_bins")
        pos = _HEADER.size
        sketch._sum_units = int.from_bytes(body[pos : pos + sum_len], "little") << sum_shift
        pos += sum_len
        (payload_len,) = _PAYLOAD_LEN.unpack_from(body, pos)
        pos += _PAYLOAD_LEN.size
        payload = body[pos : pos + payload_len]
        if len(payload) != payload_len or pos + payload_len != len(body):
            raise ValueError("corrupt QuantileSketch encoding: payload length mismatch")
        if flags & _FLAG_ZLIB:
            payload = _inflate(payload, limit=n_bins * 8)
        if len(payload) != n_bins * 8:
            raise ValueError("corrupt QuantileSketch encoding: bucket count mismatch")
        counts = np.frombuffer(payload, dtype="<i8").astype(np.int64)
        sketch._counts, sketch._offset = counts, low
        sketch._zero_count, sketch._count = zeros, count
        sketch._min, sketch._max = vmin, vmax
        sketch._collapsed = bool(flags & _FLAG_COLLAPSED)
        sketch._validate()
        return sketch

    def _validate(self) -> None:
        """Reject decoded state that no sequence of ``add``/``merge`` could produce."""
        counts_ok = bool(np.all(self._counts >= 0)) and (
            self._counts.size == 0 or (self._counts[0] > 0 and self._counts[-1] > 0)
        )
        totals_ok = self._zero_count >= 0 and (
            int(self._counts.sum()) + self._zero_count == self._count
        )
        if self._count:
            range_ok = 0.0 <= self._min <= self._max < math.inf
        else:
            range_ok = (self._min, self._max, self._sum_units) == (math.inf, -math.inf, 0)
        if not (counts_ok and totals_ok and range_ok):
            raise ValueError("corrupt QuantileSketch encoding: inconsistent state")
