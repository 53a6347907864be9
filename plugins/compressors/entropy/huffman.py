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
- **Encoding** is vectorised: each code is OR-ed into 64-bit words at its bit offset (a word's
  codes summed with ``np.add.reduceat``, the part that crosses into the next word added apart), then
  written MSB first.
- **Decoding** is exact and vectorised: at every bit position, the next ``L`` bits (L the longest
  code) give the code's length by a search in the canonical limits table and its symbol by the
  per-length offset table; the true symbol starts are then the chain 0 → 0 + len(0) → …, followed
  with jump tables of 2^j symbols (pointer doubling) so that the Python loop runs once per 2^J
  symbols only.

One used symbol needs no bits at all: its decoder repeats it (its length is stored as 1).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["code_lengths", "canonical_codes", "encode", "decode", "MAX_LENGTH"]

#: the longest code the decoder's 32-bit windows can read (a window starts up to 7 bits into a byte)
MAX_LENGTH = 24


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
    codes = canonical_codes(lengths)
    length = lengths[index].astype(np.uint64)
    code = codes[index]
    end_bits = np.cumsum(length, dtype=np.uint64)
    total = int(end_bits[-1])
    pos = end_bits - length
    word = (pos >> np.uint64(6)).astype(np.int64)
    end = (pos & np.uint64(63)) + length  # where the code ends, counted from its word's first bit
    fits = end <= 64
    left = np.where(fits, np.uint64(64) - np.minimum(end, np.uint64(64)), np.uint64(0))
    right = np.where(fits, np.uint64(0), end - np.uint64(64))
    high = np.where(fits, code << left, code >> right)
    words = np.zeros(total // 64 + 2, dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    words[word[starts]] = np.add.reduceat(high, starts)  # disjoint bits: a sum is an OR
    spill = np.flatnonzero(~fits)
    words[word[spill] + 1] |= code[spill] << (np.uint64(128) - end[spill])
    out = words.astype(">u8").view(np.uint8)[: math.ceil(total / 8)]
    return out.copy(), total


#: lengths of codes up to this many bits come from one table lookup; longer ones from a search
TABLE_BITS = 12


def _jump_levels(count: int, nbits: int) -> int:
    """Pointer-doubling levels J: each costs a gather over every bit position, and saves half of the
    Python loop's ``count / 2**J`` steps (about 75 gathers' worth of time a step, measured): the least
    total time is at ``2**J`` about ``50 / (bits a symbol)``."""
    per_symbol = max(nbits / max(count, 1), 1.0)
    return max(0, min(8, round(math.log2(50 / per_symbol)), int(math.log2(max(count, 1)))))


def _length_table(first: np.ndarray, per_length: np.ndarray, top: int, bits: int) -> np.ndarray:
    """For each ``bits``-bit prefix of a window, the length of the code it starts with, or 0 when that
    code is longer than ``bits`` (then found by a search)."""
    table = np.zeros(1 << bits, dtype=np.uint8)
    for length in range(1, min(top, bits) + 1):
        lo, hi = int(first[length]) << (bits - length), int(first[length] + per_length[length]) << (bits - length)
        table[lo:hi] = length
    return table


def decode(data: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` symbol indices (int64) that :func:`encode` wrote into ``data`` with these lengths.

    Raises:
        ValueError: the data end before ``count`` symbols are read (a corrupt stream).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if lengths.size == 1:
        return np.zeros(count, dtype=np.int64)
    top = int(lengths.max())
    first, per_length = _tables(lengths)
    # canonical limits: a window (the next `top` bits) whose value is below limit[l] has a code of length <= l
    lens = np.arange(1, top + 1)
    limit = (first[1:] + per_length[1:]) << (top - lens)
    offset = np.concatenate([[0], np.cumsum(per_length[1:])])  # first sorted index of each length
    by_code = np.lexsort((np.arange(lengths.size), lengths))  # the symbols in canonical order
    data = np.asarray(data, dtype=np.uint8)
    nbits = data.size * 8
    padded = np.concatenate([data, np.zeros(4, dtype=np.uint8)]).astype(np.uint32)
    byte_windows = (padded[:-3] << 24) | (padded[1:-2] << 16) | (padded[2:-1] << 8) | padded[3:]
    byte_windows = byte_windows[: data.size]
    # windows[p] = the `top` bits that start at bit p, for every bit position p (bit-major order)
    shifts = np.arange(8, dtype=np.uint32)
    windows = ((byte_windows[:, None] << shifts[None, :]) >> np.uint32(32 - top)).reshape(-1)
    bits = min(top, TABLE_BITS)
    length_at = _length_table(first, per_length, top, bits)[windows >> np.uint32(top - bits)]
    longer = np.flatnonzero(length_at == 0)
    if longer.size:  # codes longer than the table (and the invalid windows of the padding)
        length_at[longer] = np.minimum(np.searchsorted(limit, windows[longer], side="right") + 1, top).astype(np.uint8)
    dtype = np.int32 if nbits < 2**31 - 64 else np.int64
    nxt = np.empty(nbits + 1, dtype=dtype)
    nxt[:-1] = np.minimum(np.arange(nbits, dtype=dtype) + length_at.astype(dtype), nbits)
    nxt[-1] = nbits
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
    where = positions.T.reshape(-1)[:count]
    ln = length_at[where] if int(where[-1]) < nbits else None
    end = int(where[-1]) + int(ln[-1]) if ln is not None else nbits + 1
    if not nbits - 8 < end <= nbits:
        raise ValueError(f"the Huffman stream does not hold its {count} symbols exactly (a corrupt stream)")
    assert ln is not None
    win = windows[where].astype(np.int64)
    ln = ln.astype(np.int64)
    rank = offset[ln - 1] + (win >> (top - ln)) - first[ln]
    if rank.size and (int(rank.min()) < 0 or int(rank.max()) >= lengths.size):
        raise ValueError("the Huffman stream holds a bit pattern that is no code (a corrupt stream)")
    return by_code[rank].astype(np.int64)
