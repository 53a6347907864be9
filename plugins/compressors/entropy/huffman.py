"""Canonical, length-limited Huffman coding in numpy (Deep Compression's entropy coder).

- **Code lengths**: optimal lengths under a limit ``max_length`` by the package-merge algorithm
  (Larmore & Hirschberg 1990): the symbols' counts are the coins; at each of the levels
  ``max_length .. 2`` the sorted list is paired into packages that are merged with the leaves, and
  the first ``2k - 2`` items of the top list select the coins; a symbol's length is how many
  selected items hold it. The selected items of a level are a prefix of its list, so the walk back
  down needs only each level's merged order. Without a binding limit this is plain Huffman.
- **Canonical codes** (as in DEFLATE): symbols sorted by (length, symbol value) get consecutive
  codes, the first code of each length being ``(first[l - 1] + count[l - 1]) << 1``; so the lengths
  alone define the code, and they are all that is stored.
- **Encoding** is vectorised: each code, stored at the top of a 64-bit word, is shifted right to its
  bit offset in its word, a word's codes are summed with ``np.add.reduceat`` (disjoint bits), the part
  that crosses into the next word is added apart; then written MSB first.
- **Decoding** is exact and vectorised: at every bit position a table on the next ``TABLE_BITS``
  bits gives the length of the code that would start there (longer codes: a search in the canonical
  limits). The true code starts are the chain 0 → 0 + len(0) → …, followed by lanes (see
  :func:`_lane_starts`): the stream is cut into segments of a few hundred bits, one lane a segment
  follows the chain from the segment's first bit, all lanes in lockstep (one gather a step), and
  since Huffman codes resynchronise, neighbouring lanes that reach the same position past the
  segment's end are on the true chain from there; lanes that disagree are run again from the true
  position, and codes that never resynchronise fall back to pointer doubling. The symbols at the
  starts come from a second table on the same bits. Nothing is added to the stream.

One used symbol needs no bits at all: its decoder repeats it (its length is stored as 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import MAX_LENGTH  # defined with the settings, which load without torch

__all__ = ["code_lengths", "canonical_codes", "encode", "decode", "MAX_LENGTH"]


def code_lengths(counts: np.ndarray, max_length: int) -> np.ndarray:
    """Optimal code lengths (int64) for symbols with these positive ``counts``, none above ``max_length``.

    Raises:
        ValueError: more symbols than ``2**max_length`` codes can tell apart, or a count is not positive.
    """
    counts = np.asarray(counts, dtype=np.int64)
    k = counts.size
    if k and int(counts.min()) <= 0:
        raise ValueError("Huffman code lengths need positive counts (only the used symbols)")
    if not 1 <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_code_length must be in [1, {MAX_LENGTH}], got {max_length}")
    if k > 2**max_length:
        raise ValueError(f"{k} symbols need codes longer than max_code_length={max_length}: raise max_code_length")
    if k <= 1:
        return np.ones(k, dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    leaves = counts[order]
    # the deepest level's list is the leaves; each level up merges the leaves with the packages of
    # the level below (leaves first at equal weight: the stable sort keeps the concatenation order)
    weights = leaves
    levels: list[tuple[np.ndarray, np.ndarray]] = [(np.ones(k, dtype=bool), np.arange(k))]
    for _ in range(max_length - 1):
        pairs = weights.size // 2
        packages = weights[0 : 2 * pairs : 2] + weights[1 : 2 * pairs : 2]
        merged = np.concatenate([leaves, packages])
        by = np.argsort(merged, kind="stable")
        weights = merged[by]
        is_leaf = by < k
        levels.append((is_leaf, np.where(is_leaf, by, by - k)))
    lengths_sorted = np.zeros(k, dtype=np.int64)
    take = 2 * k - 2
    for is_leaf, index in reversed(levels):
        leaf, idx = is_leaf[:take], index[:take]
        np.add.at(lengths_sorted, idx[leaf], 1)
        take = 2 * int((~leaf).sum())
    lengths = np.empty(k, dtype=np.int64)
    lengths[order] = lengths_sorted
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code (uint64) of each symbol, given the lengths of the symbols in value order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    if lengths.size == 0:
        return codes
    first, _ = _tables(lengths)
    order = np.lexsort((np.arange(lengths.size), lengths))
    sorted_lengths = lengths[order]
    # rank of each symbol among those of its length
    starts = np.searchsorted(sorted_lengths, sorted_lengths, side="left")
    rank = np.arange(lengths.size) - starts
    codes[order] = (first[sorted_lengths] + rank).astype(np.uint64)
    return codes


def _tables(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """first[l]: the first canonical code of length l; count[l]: how many codes have length l."""
    top = int(lengths.max())
    count = np.bincount(lengths, minlength=top + 1).astype(np.int64)
    count[0] = 0
    first = np.zeros(top + 1, dtype=np.int64)
    for length in range(2, top + 1):
        first[length] = (first[length - 1] + count[length - 1]) << 1
    return first, count


def encode(index: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, int]:
    """Encode symbol indices (into ``lengths``) as bytes, MSB first; returns (bytes, exact bit count).

    With a single symbol in the table, nothing is written (the decoder repeats it)."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0 or lengths.size <= 1:
        return np.zeros(0, dtype=np.uint8), 0
    table_lengths = np.asarray(lengths, dtype=np.uint64)
    aligned_codes = canonical_codes(lengths) << (np.uint64(64) - table_lengths)  # each code at a word's top
    length = table_lengths.take(index)
    pos = np.empty(index.size, dtype=np.uint64)  # each code's first bit (torch's cumsum: 3x numpy's)
    pos[0] = 0
    torch.cumsum(torch.from_numpy(length[:-1].view(np.int64)), 0, out=torch.from_numpy(pos[1:].view(np.int64)))
    total = int(pos[-1] + length[-1])
    offset = pos & np.uint64(63)
    high = aligned_codes.take(index) >> offset  # the code's bits that fall in its word (all, unless it spills)
    words = np.zeros(-(-total // 64) + 1, dtype=np.uint64)
    # every 64-bit word up to the last code's holds a code's first bit (codes are shorter than 64 bits)
    starting = int(pos[-1]) // 64 + 1
    first_in_word = np.searchsorted(pos, np.arange(starting, dtype=np.uint64) << np.uint64(6))
    words[:starting] = np.add.reduceat(high, first_in_word)  # disjoint bits: a sum is an OR
    # a code spills into the next word iff it is the last to start in its word and ends past it
    boundary = np.arange(1, starting + 1, dtype=np.uint64) << np.uint64(6)
    last_in_word = np.r_[first_in_word[1:], index.size] - 1
    ends = pos[last_in_word] + length[last_in_word]
    spill = last_in_word[ends > boundary]
    spilled = aligned_codes.take(index[spill]) << (np.uint64(64) - offset[spill])  # the bits past its word
    words[(pos[spill] >> np.uint64(6)).astype(np.int64) + 1] |= spilled
    out = words.astype(">u8").view(np.uint8)[: math.ceil(total / 8)]
    return out.copy(), total


#: lengths and symbols of codes up to this many bits come from one table lookup; longer ones from a search
TABLE_BITS = 12

#: restart rounds of the lane decoder before it falls back to pointer doubling (see :func:`_lane_starts`)
LANE_ROUNDS = 4


def _lookup_tables(first: np.ndarray, per_length: np.ndarray, by_code: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """For each ``bits``-bit prefix of a window: the length of the code it starts with (uint8) and that
    code's symbol index (int64); 0 and -1 when the code is longer than ``bits`` or no code (then found
    by a search)."""
    length_table = np.zeros(1 << bits, dtype=np.uint8)
    symbol_table = np.full(1 << bits, -1, dtype=np.int64)
    done = 0  # codes of the shorter lengths, in canonical order
    for length in range(1, min(len(first) - 1, bits) + 1):
        n, span = int(per_length[length]), 1 << (bits - length)
        lo = int(first[length]) << (bits - length)
        length_table[lo : lo + n * span] = length
        symbol_table[lo : lo + n * span] = np.repeat(by_code[done : done + n], span)
        done += n
    return length_table, symbol_table


def _gather(table: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = table[index]`` for 32-bit indices below 2**31: torch's ``index_select`` takes them as
    they are (numpy's ``take`` first copies them to 64 bits: twice the time on per-bit-position arrays)."""
    torch.index_select(torch.from_numpy(table), 0, torch.from_numpy(index.view(np.int32)), out=torch.from_numpy(out))


def _windows(byte_windows: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bits (at most 25) that start at each bit position, as int64."""
    positions = positions.astype(np.int64)
    word = byte_windows[positions >> 3].astype(np.int64)
    return ((word << (positions & 7)) & 0xFFFFFFFF) >> (32 - width)


def decode(data: np.ndarray, lengths: np.ndarray, count: int, values: np.ndarray | None = None) -> np.ndarray:
    """The ``count`` symbol indices (int64) that :func:`encode` wrote into ``data`` with these lengths;
    with ``values`` (one per symbol), the symbols' values instead (``values[indices]``, looked up once).

    At every bit position the next ``TABLE_BITS`` bits give the length of the code that would start
    there (one table lookup; longer codes by a search in the canonical limits). The true code starts
    are the chain 0 → 0 + length[0] → …, found by :func:`_lane_starts`; their symbols come from a
    second table on the same prefixes.

    Raises:
        ValueError: the data end before ``count`` symbols are read, or hold a bit pattern that is no
            code (a corrupt stream).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    values = np.arange(lengths.size, dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
    if values.shape != lengths.shape or (values.size and int(values.min()) < 0):
        raise ValueError("values must hold one non-negative value per code length")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if lengths.size == 1:
        return np.full(count, values[0], dtype=np.int64)
    top = int(lengths.max())
    first, per_length = _tables(lengths)
    by_code = values[np.lexsort((np.arange(lengths.size), lengths))]  # the symbols in canonical order
    data = np.asarray(data, dtype=np.uint8)
    nbits = data.size * 8
    padded = np.concatenate([data, np.zeros(3, dtype=np.uint8)]).astype(np.uint32)
    byte_windows = (padded[:-3] << 24) | (padded[1:-2] << 16) | (padded[2:-1] << 8) | padded[3:]
    # prefix[p] = the `bits` bits that start at bit p, for every bit position p (bit-major order)
    bits = min(top, TABLE_BITS)
    shifts = np.arange(8, dtype=np.uint32)
    prefix = ((byte_windows[:, None] << shifts[None, :]) >> np.uint32(32 - bits)).reshape(-1)
    length_table, symbol_table = _lookup_tables(first, per_length, by_code, bits)
    # length_at[p]: the length of the code at bit p; zeros past the end (a chain that gets there stays)
    length_at = np.zeros(nbits + top, dtype=np.uint8)
    _gather(length_table, prefix, length_at[:nbits])
    lens = np.arange(1, top + 1)
    limit = (first[1:] + per_length[1:]) << (top - lens)  # a `top`-bit window below limit[l - 1]: a code of length <= l
    partial = int(length_table.min()) == 0  # codes longer than the table, or prefixes that start no code
    if partial:
        longer = np.flatnonzero(length_at[:nbits] == 0)
        windows = _windows(byte_windows, longer, top)
        length_at[longer] = np.minimum(np.searchsorted(limit, windows, side="right") + 1, top)
    step = math.gcd(*set(lengths.tolist()))
    where = _lane_starts(length_at, nbits, count, step, top)
    end = int(where[-1]) + int(length_at[where[-1]])
    if not nbits - 8 < end <= nbits:
        raise ValueError(f"the Huffman stream does not hold its {count} symbols exactly (a corrupt stream)")
    symbol = symbol_table.take(prefix.take(where))
    long_codes = np.flatnonzero(symbol < 0) if partial else np.zeros(0, dtype=np.int64)
    if long_codes.size:
        at = where[long_codes]
        ln = length_at[at].astype(np.int64)
        offset = np.concatenate([[0], np.cumsum(per_length[1:])])  # first canonical index of each length
        rank = offset[ln - 1] + (_windows(byte_windows, at, top) >> (top - ln)) - first[ln]
        if int(rank.min()) < 0 or int(rank.max()) >= lengths.size:
            raise ValueError("the Huffman stream holds a bit pattern that is no code (a corrupt stream)")
        symbol[long_codes] = by_code[rank]
    return symbol


def _run_lanes(length_at: np.ndarray, starts: np.ndarray, bound: np.ndarray, rows: int) -> np.ndarray:
    """Follow p → p + length_at[p] from each start in lockstep until every lane is at or past its bound.

    Returns (steps, lanes): row t holds each lane's position after t codes (a lane runs on past its
    bound while others finish; past the end a lane stays where it is)."""
    out = np.empty((max(rows, 9), starts.size), dtype=starts.dtype)
    out[0] = starts
    t = 0
    while True:
        for _ in range(8):
            if t + 1 == out.shape[0]:
                out = np.concatenate([out, np.empty_like(out)])
            np.add(out[t], length_at.take(out[t]), out=out[t + 1])
            t += 1
        if bool((out[t] >= bound).all()):
            return out[: t + 1]


def _lane_starts(
    length_at: np.ndarray,
    nbits: int,
    count: int,
    step: int,
    top: int,
    segment: int | None = None,
    rounds: int = LANE_ROUNDS,
) -> np.ndarray:
    """The first ``count`` positions of the chain 0 → 0 + length_at[0] → … (the true code starts).

    ``length_at`` holds the length of the code at each of the ``nbits`` bit positions and then
    ``top`` zeros (a chain past the end stays there). The stream is cut into segments of ``segment``
    bits (a multiple of ``step``, the gcd of the code lengths, so a fixed-length code's lanes start on
    true code starts); lane k follows the chain from its segment's first bit, speculatively, in
    lockstep with the others (one gather and one add a step for all lanes), until ``margin`` bits past
    the next segment's start: Z_k. Huffman codes resynchronise: a lane started off a code boundary
    soon falls onto the true chain, and then follows it. Lane 0 is true; if lane k is true from
    Z_{k-1} on and lanes k and k + 1 reach the same first position at or past Z_k, lane k + 1 is true
    from there, so the true starts are lane k's positions in [Z_{k-1}, Z_k) for every k (exact, by
    induction). Where two neighbours disagree (no resynchronisation within the margin), lane k + 1 is
    run again from lane k's position, which is true once lane k is: each round makes at least the
    first disagreement agree. After ``rounds`` rounds, or at once when most neighbours disagree (a code
    that hardly resynchronises), this falls back to :func:`_doubling_starts`.

    Raises:
        ValueError: the chain ends before ``count`` positions (a corrupt stream).
    """
    dtype = np.int32 if nbits < 2**31 - 64 else np.int64
    margin = 4 * top + 32
    if segment is None:  # least time: lockstep steps (a few us each) against the margin's extra gathers
        segment = max(2 * top, math.isqrt(nbits * margin // 1000))
    segment = -(-segment // step) * step
    lanes = max(1, (nbits - margin - 1) // segment + 1)  # every bound but the last lies inside the stream
    starts = np.arange(lanes, dtype=dtype) * segment
    bound = np.empty(lanes, dtype=dtype)
    bound[:-1] = starts[1:] + margin
    bound[-1] = nbits
    rows = int((segment + margin) * count / max(nbits, 1) * 1.25) + 16
    out = _run_lanes(length_at, starts, bound, rows)
    previous, following = np.arange(lanes - 1), np.arange(1, lanes)
    low = np.zeros(lanes, dtype=np.int64)
    for attempt in range(rounds + 1):
        high = (out < bound).sum(axis=0)  # lane k's positions before Z_k (before the end, the last lane)
        low[1:] = (out[:, 1:] < bound[:-1]).sum(axis=0)  # lane k's positions before Z_{k-1}
        reached = out[high[:-1], previous]  # lane k's first position at or past Z_k
        disagree = np.flatnonzero(reached != out[low[1:], following])
        if disagree.size == 0:
            break
        # a code that hardly resynchronises (most neighbours disagree) goes to the fallback at once
        if attempt == rounds or 2 * disagree.size > lanes:
            where = _doubling_starts(length_at, nbits, count)
            if int(where[-1]) >= nbits:
                raise ValueError(f"the Huffman stream does not hold its {count} symbols exactly (a corrupt stream)")
            return where
        again = disagree + 1
        redo = _run_lanes(length_at, reached[disagree], bound[again], out.shape[0])
        if redo.shape[0] > out.shape[0]:
            out = np.concatenate([out, np.repeat(out[-1:], redo.shape[0] - out.shape[0], axis=0)])
        out[: redo.shape[0], again] = redo
        out[redo.shape[0] :, again] = redo[-1]
    sizes = high - low
    if int(sizes.sum()) < count:
        raise ValueError(f"the Huffman stream does not hold its {count} symbols exactly (a corrupt stream)")
    by_lane = np.ascontiguousarray(out.T).reshape(-1)
    base = np.arange(lanes, dtype=np.int64) * out.shape[0] + low - (np.cumsum(sizes) - sizes)
    return by_lane.take(np.repeat(base, sizes)[:count] + np.arange(count))


def _jump_levels(count: int, nbits: int) -> int:
    """Pointer-doubling levels J: each costs a gather over every bit position, and saves half of the
    Python loop's ``count / 2**J`` steps (about 75 gathers' worth of time a step, measured): the least
    total time is at ``2**J`` about ``50 / (bits a symbol)``."""
    per_symbol = max(nbits / max(count, 1), 1.0)
    return max(0, min(8, round(math.log2(50 / per_symbol)), int(math.log2(max(count, 1)))))


def _doubling_starts(length_at: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """The first ``count`` positions of the chain (as :func:`_lane_starts`) by pointer doubling, the
    fallback for codes that do not resynchronise: jump tables of 2^J codes over every bit position, so
    that the Python loop runs once per 2^J codes only; past the end, positions are at or after it."""
    dtype = np.int32 if nbits < 2**31 - 64 else np.int64
    nxt = np.arange(length_at.size, dtype=dtype) + length_at  # within the array: top zeros end it
    levels = _jump_levels(count, nbits)
    jump = nxt
    for _ in range(levels):
        jump = jump[jump]
    step = 1 << levels
    chunks = -(-count // step)
    starts = np.empty(chunks, dtype=dtype)
    p = 0
    for i in range(chunks):
        starts[i] = p
        p = int(jump[p])
    positions = np.empty((step, chunks), dtype=dtype)
    positions[0] = starts
    for j in range(1, step):
        positions[j] = nxt[positions[j - 1]]
    return positions.T.reshape(-1)[:count]
