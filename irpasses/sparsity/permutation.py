"""Channel permutations for N:M sparsity: reorder the K input channels of a weight W [K, N] (Y = X @ W) so
that the N:M pattern, n kept of every m consecutive rows per column, keeps more of the weight's importance.

Why: which channels share a group is an accident of the layer's channel order. Permuting W's rows and X's
columns alike leaves Y unchanged (the permutation folds into whatever produces X), but regroups the channels:
a group of four strong channels must drop two strong weights per column, a group of two strong and two weak
ones drops only weak ones.

Search (our own; apex's code was read for its definitions, not copied): the state is a partition of the
channels into K/m groups (order inside a group and order of groups do not matter). A move takes two groups
and redistributes their 2m channels by exchanging up to two channels: for 2:4 that is every one of the 35
ways to split 8 channels into two groups of 4, for 4:8 the 848 exchanges of one or two channels. The values
of all moves of a batch of group pairs come from a few numpy operations on sorted prefix sums (the top n of
"the rows a group keeps" plus "the rows it receives" take j of the received ones, for the best j). The search

1. starts from the better of the given order and a balanced one (channels ranked by total importance and
   dealt to the groups in a snake, so every group holds one channel of each rank tier),
2. with more than ``WINDOW_GROUPS`` groups, runs greedy sweeps over random pairings of all groups until a
   sweep gains nothing: cheap (K/2m pairs a sweep) and where most of a large layer's gain comes from,
3. runs an iterated local search on a window of groups (all of them when they fit, else random windows that
   take turns): a descent keeps the best move of every pair of the window and applies the improving ones,
   best first and one per group, until none is left; then kicks deal the channels of ``KICK_GROUPS`` random
   groups out again at random, descend, and keep the result when it is no worse (else undo).

It stops at ``max_rounds`` kicks or at the time budget, whichever comes first; the sequence of steps depends
only on the input and the seed, so without a time budget the result does too. A descent that the clock cuts
keeps its moves (each one improved the total); a kick it cuts is undone.

Measured (2 shared CPU cores): on apex's 64x128 case below, the 35-split descent alone, from the given
order, reproduces apex's 35.5 % (optimize_stripe_groups,8,0); one second of kicks reaches about 38 %;
annealing with heat-bath moves on random pairings, tried first, reached about 1 point less in the same time.
Batches keep their temporaries under 128 KiB: with larger ones glibc can hand the memory back to the kernel
after every batch and the next one page-faults it in again, 2-4x slower per pair (MALLOC_TOP_PAD_ made that
slowdown vanish), depending on what the process allocated before.

Reference point, NVIDIA apex's permutation search (``apex/contrib/sparsity/permutation_tests``,
Pool & Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021), read to make our figures comparable:

- efficacy = (lost_default - lost_found) / (lost_default - lost_unstructured), ``efficacy()`` in
  ``permutation_search_kernels/permutation_utilities.py``, where lost_X = total magnitude - magnitude kept by
  X: default = 2:4 in the given order, found = 2:4 after the permutation, unstructured = the same rate of
  pruning per output without structure (``magnitude_after_pruning_rows(rate=0.5)``: the largest half of each
  output's weights). Equivalently (kept_after - kept_before) / (bound - kept_before): the share of the gap
  to unstructured pruning that the permutation closes. It is not the share of pruned importance saved; that
  is ``Permutation.pruned_reduction``.
- the README's 64x128 case (``--channels 64 --filters 128``, default ``--seed 1``) is
  ``np.random.seed(1); np.random.rand(128, 64)``: uniform [0, 1) values, 128 filters (outputs) x 64
  channels, 2:4 groups of 4 consecutive channels along each filter, the permutation reorders the 64 channels,
  importance = |w| = w. In our [K, N] layout that matrix is its transpose (K = 64 channels, N = 128 outputs);
  it reproduces the README's table exactly (unpruned 4083.169, default 2:4 2852.377, unstructured bound
  3042.332). Published: optimize_stripe_groups with 12-channel windows 36.6 % in 0.86 s on a V100; 8-channel
  windows (our pair move set, no escapes) 35.5 %; CPU path 32.1-35.5 % in 56-466 s.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from functools import cache

import numpy as np
from onnxpress.irpasses.core.errors import DataError

CHUNK_ELEMENTS = 1 << 15
"""Float32 elements of the largest temporary ([moves, pairs, columns]) of one batch: just under glibc's 128 KiB
mmap threshold. Measured per pair: 1.5x faster than 64 KiB batches (fewer numpy calls a pair), while 256 KiB
ones ran 2x slower on apex's case (page faults) and only 10-30 % faster on MiniLM's layers."""
MIN_BLOCK = 64
"""Columns per block at least, when one pair's moves alone exceed CHUNK_ELEMENTS (4:8: 784 moves; measured
fastest, 2.5 ms a pair at N = 384 against 4.6 ms with 256 columns and 10 ms with 16)."""
MAX_EXCHANGE = 2
"""Channels a move exchanges between two groups: 2 covers every split of two groups of 4."""
WINDOW_GROUPS = 64
"""The local search keeps the best move of every pair of this many groups (2016 pairs): all groups when they
fit, else windows of random groups that take turns."""
WINDOW_KICKS = 64
"""Kicks per window when the groups do not fit one window (then windows of random groups take turns)."""
KICK_GROUPS = 3
"""Groups whose channels a kick deals out again (2 would be undone by the next pair move)."""
BOUND_COLUMNS = 512
"""Columns per block when computing the unstructured bound."""


@dataclass(frozen=True, eq=False)
class Permutation:
    """A channel order and what it keeps. ``order[i]`` is the original row that goes to row i: apply it as
    ``W[order]`` (and ``X[:, order]``)."""

    order: np.ndarray
    kept_before: float
    kept_after: float
    total: float
    bound: float
    efficacy: float
    seconds: float
    rounds: int

    @property
    def pruned_reduction(self) -> float:
        """Share of the importance pruned in the original order that the permutation keeps instead."""
        lost = self.total - self.kept_before
        return (self.kept_after - self.kept_before) / lost if lost > 0 else 0.0


def _checked(importance: np.ndarray, m: int, n: int) -> np.ndarray:
    """``importance`` [K, N] as float32 (float32 and float16 inputs) or float64, after the checks every entry
    point needs."""
    a = np.asarray(importance)
    if a.ndim != 2:
        raise DataError(f"permutation: expected a 2-D importance [K, N], got shape {a.shape}")
    if m < 2 or not 1 <= n < m:
        raise DataError(f"permutation: {n}:{m} is not an N:M pattern", hint="m >= 2 and 1 <= n < m (2:4, 4:8...)")
    if a.shape[0] % m:
        raise DataError(f"permutation: K={a.shape[0]} input channels are not a multiple of m={m}",
                        hint=f"{n}:{m} sparsity needs whole groups of {m} rows along K")
    a = a.astype(np.float32 if a.dtype in (np.float16, np.float32) else np.float64, copy=False)
    if not np.isfinite(a).all() or (a < 0).any():
        raise DataError("permutation: importance must be finite and >= 0", hint="use |W| or |W| * ||x||")
    return a


def _kept(a: np.ndarray, m: int, n: int) -> float:
    K, N = a.shape
    rows = a.reshape(K // m, m, N).transpose(1, 0, 2)  # [m, groups, N]
    return float(_prefix_desc(rows, n)[n].sum(dtype=np.float64))


def _bound(a: np.ndarray, m: int, n: int) -> float:
    K, N = a.shape
    keep = K * n // m
    total = 0.0
    for start in range(0, N, BOUND_COLUMNS):  # column blocks bound the copies
        by_column = np.ascontiguousarray(a[:, start:start + BOUND_COLUMNS].T)  # partitioning the last axis: 2x faster
        total += float(np.partition(by_column, K - keep, axis=-1)[:, K - keep:].sum(dtype=np.float64))
    return total


def kept_importance(importance: np.ndarray, m: int, n: int) -> float:
    """Importance [K, N] kept by N:M in the given row order: per column, the n largest of each m rows."""
    return _kept(_checked(importance, m, n), m, n)


def unstructured_bound(importance: np.ndarray, m: int, n: int) -> float:
    """Importance kept by pruning the same share of every column without structure (apex's reference for
    efficacy 100 %): no permutation can keep more."""
    return _bound(_checked(importance, m, n), m, n)


def efficacy(kept_before: float, kept_after: float, bound: float) -> float:
    """apex's efficacy: the share of the gap between N:M in the given order and unstructured pruning that
    the permutation closes (1.0 when there is no gap)."""
    gap = bound - kept_before
    return 1.0 if gap <= 0 else (kept_after - kept_before) / gap


def balanced_order(importance: np.ndarray, m: int) -> np.ndarray:
    """Channels ranked by total importance, dealt to K/m groups in a snake (tier t of K/m channels fills the
    groups forwards when t is even, backwards when odd): every group gets one channel per rank tier."""
    K = importance.shape[0]
    G = K // m
    rank = np.argsort(-importance.sum(axis=1), kind="stable")
    group = np.empty(K, np.int64)
    for tier in range(m):
        slots = np.arange(G) if tier % 2 == 0 else np.arange(G)[::-1]
        group[rank[tier * G:(tier + 1) * G]] = slots
    return np.argsort(group, kind="stable")


# ----- move tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exchange:
    """The moves that exchange k channels: ``gives`` [C, k] positions a group gives away and ``keeps``
    [C, m-k] the positions it keeps; a move is (g gives ``gives[g_choices[i]]``, h gives ``gives[j]``)."""

    k: int
    gives: np.ndarray
    keeps: np.ndarray
    g_choices: np.ndarray

    @property
    def moves(self) -> int:
        return len(self.g_choices) * len(self.gives)


@cache
def _exchanges(m: int) -> tuple[_Exchange, ...]:
    """Exchange tables for k = 1..min(MAX_EXCHANGE, m // 2). When 2k = m, giving set A for B and giving the
    complements is the same split: g then only gives sets that hold its position 0."""
    out = []
    for k in range(1, min(MAX_EXCHANGE, m // 2) + 1):
        gives = np.array(list(itertools.combinations(range(m), k)), np.int64).reshape(-1, k)
        keeps = np.array([[p for p in range(m) if p not in row] for row in gives], np.int64).reshape(len(gives), m - k)
        g_choices = np.flatnonzero(gives[:, 0] == 0) if 2 * k == m else np.arange(len(gives))
        out.append(_Exchange(k, gives, keeps, g_choices))
    return tuple(out)


def _top_desc(rows: np.ndarray, count: int) -> list[np.ndarray]:
    """The ``count`` largest of ``rows`` [..., r, P, N] along axis -3, in descending order, as arrays
    [..., P, N]: a partial bubble network of np.maximum / np.minimum (numpy's sort and cumsum along a short
    middle axis are several times slower)."""
    cols = [rows[..., i, :, :] for i in range(rows.shape[-3])]
    for i in range(count):
        for pos in range(len(cols) - 1, i, -1):
            high, low = np.maximum(cols[pos - 1], cols[pos]), np.minimum(cols[pos - 1], cols[pos])
            cols[pos - 1], cols[pos] = high, low
    return cols[:count]


def _prefix_desc(rows: np.ndarray, upto: int) -> list:
    """Sums of the j largest of ``rows`` [..., r, P, N] along axis -3 for j = 0..min(upto, r) (j = 0: 0.0)."""
    prefix: list = [0.0]
    for top in _top_desc(rows, min(upto, rows.shape[-3])):
        prefix.append(top if len(prefix) == 1 else prefix[-1] + top)
    return prefix


def _side_values(keep_prefix: list, got_prefix: list, n: int, g_side: bool) -> np.ndarray:
    """Kept importance of a group that keeps rows with prefix sums ``keep_prefix`` and receives rows with
    prefix sums ``got_prefix`` (lists over j of [C, P, N]), for every move as [Cg, Ch, P, N] (the g side:
    keep choices along axis 0; the h side: along axis 1; possibly a broadcast view). The top n of the union
    take j of the received rows and n - j of the kept ones, for the best j."""
    r = len(keep_prefix) - 1
    k = len(got_prefix) - 1
    best, owned = None, False
    for j in range(max(0, n - r), min(k, n) + 1):
        kept = (keep_prefix[n - j][:, None] if g_side else keep_prefix[n - j][None, :]) if j < n else None
        got = (got_prefix[j][None, :] if g_side else got_prefix[j][:, None]) if j else None
        value, fresh = (got, False) if kept is None else (kept, False) if got is None else (kept + got, True)
        if best is None:
            best, owned = value, fresh
        elif owned and best.shape == np.broadcast_shapes(best.shape, value.shape):
            np.maximum(best, value, out=best)
        else:
            best, owned = np.maximum(best, value), True
    return best


def _split_values(rows_g: np.ndarray, rows_h: np.ndarray, n: int, base: np.ndarray | None = None) -> np.ndarray:
    """Values [S, P] of every split of each pair of groups with rows ``rows_g``, ``rows_h`` [m, P, N]: split 0
    keeps both groups (``base``, the pairs' current values, when known), the others follow ``_exchanges(m)``
    in order (k = 1 first; g's choice major)."""
    m, P = rows_g.shape[0], rows_g.shape[1]
    ones = np.ones(rows_g.shape[-1], rows_g.dtype)  # sums over columns as BLAS matrix-vector products: 2x np.sum
    rows = np.stack([rows_g, rows_h])  # [2, m, P, N]: g's and h's tables in one pass
    if base is None:
        whole = _prefix_desc(rows, n)[n] @ ones  # [2, P]
        base = whole[0] + whole[1]
    values = [base[None]]
    for ex in _exchanges(m):
        kept = _prefix_desc(rows[:, ex.keeps], n)  # each [2, C, P, N]
        gave = _prefix_desc(rows[:, ex.gives], n)
        every = len(ex.g_choices) == len(ex.gives)
        kept_g = [x if j == 0 else x[0] if every else x[0, ex.g_choices] for j, x in enumerate(kept)]
        gave_g = [x if j == 0 else x[0] if every else x[0, ex.g_choices] for j, x in enumerate(gave)]
        kept_h = [x if j == 0 else x[1] for j, x in enumerate(kept)]
        gave_h = [x if j == 0 else x[1] for j, x in enumerate(gave)]
        both = _side_values(kept_g, gave_h, n, True) + _side_values(kept_h, gave_g, n, False)
        values.append((both @ ones).reshape(-1, P))
    return np.concatenate(values)


@cache
def _members(m: int) -> np.ndarray:
    """[S, 2m]: for each split, the positions among the 2m channels of (g, h) that form the new g (first m)
    and the new h (last m); split 0 changes nothing."""
    rows = [np.arange(2 * m)]
    for ex in _exchanges(m):
        for g_choice in ex.g_choices:
            for h_choice in range(len(ex.gives)):
                rows.append(np.concatenate([ex.keeps[g_choice], m + ex.gives[h_choice], m + ex.keeps[h_choice], ex.gives[g_choice]]))
    return np.stack(rows)


# ----- the search --------------------------------------------------------------------------------------


class _Search:
    """A partition of the channels into groups, the values of the groups, and moves on pairs of groups."""

    def __init__(self, importance: np.ndarray, m: int, n: int, order: np.ndarray, rng: np.random.Generator) -> None:
        self.a = importance.astype(np.float32, copy=False)
        self.m, self.n, self.rng = m, n, rng
        self.groups = order.reshape(-1, m).copy()
        self.G = len(self.groups)
        self.value = np.zeros(self.G, np.float32)
        self.refresh(np.arange(self.G))
        self.tol = 1e-5 * max(float(self.value.mean()), 1e-30)
        N = self.a.shape[1]
        widest = max([ex.moves for ex in _exchanges(m)] + [2 * m])
        self.block = min(N, max(MIN_BLOCK, CHUNK_ELEMENTS // widest))
        self.batch = max(1, CHUNK_ELEMENTS // (widest * self.block))

    def refresh(self, which: np.ndarray) -> None:
        rows = self.a[self.groups[which].T]  # [m, len, N]
        self.value[which] = _prefix_desc(rows, self.n)[self.n].sum(axis=-1)

    def total(self, which: np.ndarray | None = None) -> float:
        return float((self.value if which is None else self.value[which]).sum(dtype=np.float64))

    def splits(self, gi: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Values [S, P] of every split of the pairs (gi[p], hi[p]), a column block at a time (the values are
        sums over columns)."""
        rows_g = self.a[self.groups[gi].T]  # [m, P, N]
        rows_h = self.a[self.groups[hi].T]
        if self.block >= self.a.shape[1]:
            return _split_values(rows_g, rows_h, self.n, self.value[gi] + self.value[hi])
        total = None
        for start in range(0, self.a.shape[1], self.block):
            part = _split_values(rows_g[..., start:start + self.block], rows_h[..., start:start + self.block], self.n)
            total = part if total is None else total + part
        return total

    def best_splits(self, gi: np.ndarray, hi: np.ndarray, deadline: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Best split and its gain for every pair, in batches; None when the deadline passes first."""
        best = np.zeros(len(gi), np.int64)
        gain = np.zeros(len(gi), np.float32)
        for start in range(0, len(gi), self.batch):
            if time.perf_counter() > deadline:
                return None
            stop = start + self.batch
            values = self.splits(gi[start:stop], hi[start:stop])
            best[start:stop] = values.argmax(axis=0)
            gain[start:stop] = values[best[start:stop], np.arange(values.shape[1])] - values[0]
        return best, gain

    def apply(self, gi: np.ndarray, hi: np.ndarray, chosen: np.ndarray) -> None:
        """Move every pair (gi[p], hi[p]) to its split chosen[p] and refresh their values."""
        both = np.concatenate([self.groups[gi], self.groups[hi]], axis=1)  # [P, 2m]
        new = np.take_along_axis(both, _members(self.m)[chosen], axis=1)
        self.groups[gi], self.groups[hi] = new[:, : self.m], new[:, self.m:]
        self.refresh(np.concatenate([gi, hi]))

    def sweep(self, deadline: float) -> float:
        """Greedy moves on one random pairing of all groups; returns the gain."""
        shuffled = self.rng.permutation(self.G)[: self.G // 2 * 2].reshape(-1, 2)
        gi, hi = shuffled[:, 0], shuffled[:, 1]
        found = self.best_splits(gi, hi, deadline)
        if found is None:
            return 0.0
        best, gain = found
        improving = gain > self.tol
        self.apply(gi[improving], hi[improving], best[improving])
        return float(gain[improving].sum(dtype=np.float64))


class _Window:
    """The best move of every pair of a set of groups, kept until one of the pair's groups changes."""

    def __init__(self, search: _Search, groups: np.ndarray) -> None:
        self.search, self.groups = search, groups
        i, j = np.triu_indices(len(groups), 1)
        self.gi, self.hi = groups[i], groups[j]
        self.best = np.zeros(len(i), np.int64)
        self.gain = np.zeros(len(i), np.float32)
        self.stale = np.ones(len(i), bool)

    def descend(self, deadline: float) -> bool:
        """Apply improving moves until none is left; each step applies the improving moves in order of gain,
        one per group. False when the deadline stopped it."""
        s = self.search
        while True:
            todo = np.flatnonzero(self.stale)
            found = s.best_splits(self.gi[todo], self.hi[todo], deadline)
            if found is None:
                return False
            self.best[todo], self.gain[todo] = found
            self.stale[:] = False
            improving = np.flatnonzero(self.gain > s.tol)
            if len(improving) == 0:
                return True
            used = np.zeros(s.G, bool)
            chosen = []
            for pair in improving[np.argsort(-self.gain[improving], kind="stable")]:
                if not (used[self.gi[pair]] or used[self.hi[pair]]):
                    used[self.gi[pair]] = used[self.hi[pair]] = True
                    chosen.append(pair)
            s.apply(self.gi[chosen], self.hi[chosen], self.best[chosen])
            self.touch(used)

    def touch(self, changed: np.ndarray) -> None:
        """Forget the moves of the pairs that hold a changed group (``changed``: a mask over all groups)."""
        self.stale |= changed[self.gi] | changed[self.hi]
        self.gain[self.stale] = 0.0

    def kick(self) -> None:
        """Deal the channels of KICK_GROUPS random groups of the window out again at random."""
        s = self.search
        pick = s.rng.choice(self.groups, KICK_GROUPS, replace=False)
        channels = s.groups[pick].ravel()
        s.groups[pick] = s.rng.permutation(channels).reshape(len(pick), s.m)
        s.refresh(pick)
        changed = np.zeros(s.G, bool)
        changed[pick] = True
        self.touch(changed)

    def save(self) -> tuple[np.ndarray, ...]:
        return self.search.groups[self.groups].copy(), self.search.value[self.groups].copy(), self.best.copy(), self.gain.copy()

    def restore(self, saved: tuple[np.ndarray, ...]) -> None:
        self.search.groups[self.groups], self.search.value[self.groups], self.best, self.gain = saved
        self.stale[:] = False


def _iterated_local_search(search: _Search, deadline: float, max_rounds: float) -> int:
    """Descend, then kick and descend again, keeping the result when it is no worse, on windows of at most
    WINDOW_GROUPS groups (all groups when they fit: one window for good). Every state it leaves behind is a
    kept one, so ``search.groups`` is the result. Returns the kicks run."""
    rounds = 0
    whole = search.G <= WINDOW_GROUPS
    while time.perf_counter() < deadline:
        members = np.arange(search.G) if whole else np.sort(search.rng.choice(search.G, WINDOW_GROUPS, replace=False))
        window = _Window(search, members)
        if not window.descend(deadline) or search.G < KICK_GROUPS:  # two groups: nothing to kick
            break
        current = search.total(members)
        kicks = math.inf if whole else WINDOW_KICKS
        while kicks > 0 and rounds < max_rounds and time.perf_counter() < deadline:
            saved = window.save()
            window.kick()
            rounds += 1
            kicks -= 1
            finished = window.descend(deadline)
            total = search.total(members)
            if finished and total >= current - search.tol:
                current = max(current, total)
            else:
                window.restore(saved)
        if whole or rounds >= max_rounds:
            break
    return rounds


def _descend_by_pairings(search: _Search, deadline: float) -> None:
    """Greedy sweeps over random pairings of all groups until one gains nothing: with more groups than a window,
    these spread the first, large gains over all groups cheaply (G/2 pairs a sweep)."""
    while time.perf_counter() < deadline and search.sweep(deadline) > search.tol:
        pass


def search_permutation(importance: np.ndarray, m: int = 4, n: int = 2, time_budget_s: float | None = 1.0, seed: int = 0,
                       max_rounds: int | None = None) -> Permutation:
    """Search a row order of ``importance`` [K, N] (>= 0, e.g. |W| or |W| * ||x_k||) that keeps more of it
    under n:m sparsity. ``time_budget_s`` bounds the whole call (None: no bound; then ``max_rounds`` must be
    given); ``max_rounds`` bounds the kicks of the iterated local search; without a time budget the result
    depends on the input and ``seed`` only. The result never keeps less than the given order."""
    if time_budget_s is None and max_rounds is None:
        raise DataError("permutation: give a time budget, max_rounds, or both")
    started = time.perf_counter()
    a = _checked(importance, m, n)
    deadline = started + (math.inf if time_budget_s is None else max(float(time_budget_s), 0.0))
    kept_before, bound = _kept(a, m, n), _bound(a, m, n)
    order, rounds = _search(a, m, n, kept_before, np.random.default_rng(seed), deadline, max_rounds)
    kept_after = _kept(a[order], m, n)
    if kept_after < kept_before:  # float32 search noise on an input it could not improve
        order, kept_after = np.arange(a.shape[0]), kept_before
    return Permutation(order=order, kept_before=kept_before, kept_after=kept_after, total=float(a.sum(dtype=np.float64)),
                       bound=bound, efficacy=efficacy(kept_before, kept_after, bound), seconds=time.perf_counter() - started,
                       rounds=rounds)


def _search(a: np.ndarray, m: int, n: int, kept_before: float, rng: np.random.Generator, deadline: float,
            max_rounds: int | None) -> tuple[np.ndarray, int]:
    """Balanced start when it beats the given order, descent, iterated local search: the order and the kicks."""
    K = a.shape[0]
    if K < 2 * m:
        return np.arange(K), 0
    balanced = balanced_order(a, m)
    start = balanced if _kept(a[balanced], m, n) > kept_before else np.arange(K)
    search = _Search(a, m, n, start, rng)
    if search.G > WINDOW_GROUPS:
        _descend_by_pairings(search, deadline)
    rounds = _iterated_local_search(search, deadline, math.inf if max_rounds is None else max_rounds)
    return search.groups.ravel(), rounds
