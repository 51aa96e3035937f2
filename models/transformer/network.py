"""A transformer over token sequences (Vaswani et al. 2017; the GPT-2 block of Radford et al. 2019): pre-LayerNorm
blocks of multi-head self-attention and a 4x-wide GELU MLP, learned token embeddings plus learned row and column
embeddings (an image's 2-D position is the sum of its row's and its column's vector), a final LayerNorm and a
linear head to logits.

One network serves both modes: ``causal=True`` masks every slot's attention to the slots up to itself (the
autoregressive ImageGPT), ``causal=False`` lets every slot see all (MaskGIT's bidirectional model). Causal networks
also decode one slot at a time from a key/value cache (``init_cache`` / ``step``): a preallocated [slots, b, heads,
head_size] tensor per layer for the keys and one for the values, written at slot t by a scatter, so every shape is
static and a whole generation is one ``tf.while_loop`` (see ``ImageGPT``).

Precision: matrix products run in the compute dtype; LayerNorm statistics, the attention scores and their softmax,
and the logits are float32, so bfloat16 attention is as safe as float32 attention at the cost of precision in the
products alone. Weights start from N(0, 0.02), the two residual projections of each block from N(0, 0.02 / sqrt(2 ·
depth)) (GPT-2's scaling, so the residual stream's variance does not grow with depth).
"""

import math

import numpy as np
import tensorflow as tf

from models import layers

_INIT_STD = 0.02
_NEG = -1e9  # a masked attention score: exp underflows to 0 in float32


class Block(tf.Module):
  """x + attention(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, width, heads, mlp_ratio, depth, keys, dtype, name=None):
    super().__init__(name=name)
    self.heads = heads
    self.head_size = width // heads
    residual_std = _INIT_STD / math.sqrt(2 * depth)
    self.norm1 = layers.LayerNorm(width, last_axis=True, dtype=dtype)
    self.qkv = layers.Dense(width, 3 * width, keys, init_std=_INIT_STD, dtype=dtype)
    self.proj = layers.Dense(width, width, keys, init_std=residual_std, dtype=dtype)
    self.norm2 = layers.LayerNorm(width, last_axis=True, dtype=dtype)
    self.fc1 = layers.Dense(width, mlp_ratio * width, keys, init_std=_INIT_STD, dtype=dtype)
    self.fc2 = layers.Dense(mlp_ratio * width, width, keys, init_std=residual_std, dtype=dtype)

  def _split(self, h):
    """q, k, v [..., heads, head_size] of the normalised input h [..., width]."""
    q, k, v = tf.split(self.qkv(h), 3, axis=-1)
    shape = [*[tf.shape(h)[i] if s is None else s for i, s in enumerate(h.shape[:-1])], self.heads, self.head_size]
    return tf.reshape(q, shape), tf.reshape(k, shape), tf.reshape(v, shape)

  def _mlp(self, x):
    return self.fc2(tf.nn.gelu(self.fc1(self.norm2(x)), approximate=True))

  def __call__(self, x, mask, drop):
    """x [b, n, width] -> (x [b, n, width], attention probabilities float32 [b, heads, n, n]).

    ``mask``: bool [n, n], True where slot i may attend to slot j. ``drop(x, name)``: dropout of a residual branch
    (identity outside training)."""
    q, k, v = self._split(self.norm1(x))
    scores = tf.cast(tf.einsum("bqhd,bkhd->bhqk", q, k), tf.float32) / math.sqrt(self.head_size)
    probs = tf.nn.softmax(tf.where(mask[None, None], scores, _NEG), axis=-1)
    out = tf.einsum("bhqk,bkhd->bqhd", tf.cast(probs, v.dtype), v)
    x = x + drop(self.proj(tf.reshape(out, tf.shape(x))), "attention")
    return x + drop(self._mlp(x), "mlp"), probs

  def step(self, x, t, keys, values):
    """One slot through the block from the cache: x [b, width] at slot t; ``keys``, ``values`` [slots, b, heads,
    head_size] hold slots < t. Returns (x [b, width], keys, values) with slot t written."""
    q, k, v = self._split(self.norm1(x))  # [b, heads, head_size]
    keys = tf.tensor_scatter_nd_update(keys, [[t]], k[None])
    values = tf.tensor_scatter_nd_update(values, [[t]], v[None])
    scores = tf.cast(tf.einsum("bhd,sbhd->bhs", q, keys), tf.float32) / math.sqrt(self.head_size)
    seen = tf.range(int(keys.shape[0])) <= t
    probs = tf.nn.softmax(tf.where(seen[None, None], scores, _NEG), axis=-1)
    out = tf.einsum("bhs,sbhd->bhd", tf.cast(probs, values.dtype), values)
    x = x + self.proj(tf.reshape(out, tf.shape(x)))
    return x + self._mlp(x), keys, values


class Transformer(tf.Module):
  """Token ids [b, slots] -> logits float32 [b, slots, vocab_out].

  Args:
    vocab_in: size of the input embedding table (tokens and any special ids: mask, classes, start).
    vocab_out: logits per slot.
    rows, cols: int [slots] numpy arrays, each slot's row and column on the token grid; ``grid`` (h, w); a slot at
      row h (one past the grid) has no position (a class token).
    width, depth, heads, mlp_ratio: sizes; ``heads`` divides ``width``.
    dropout: rate on the embeddings and on every residual branch in training (``rng`` given).
    causal: mask attention to earlier slots (and the slot itself).
    keys: ``layers.Keys``; dtype: compute dtype.
  """

  def __init__(self, vocab_in, vocab_out, rows, cols, grid, width, depth, heads, mlp_ratio, dropout, causal, keys,
               dtype, name="transformer"):
    super().__init__(name=name)
    self.slots = len(rows)
    self.width, self.heads, self.head_size = width, heads, width // heads
    self.dropout = float(dropout)
    self.causal = causal
    self.compute_dtype = dtype
    self.rows = tf.constant(np.asarray(rows, np.int32))
    self.cols = tf.constant(np.asarray(cols, np.int32))
    self.embed = layers.Embedding(vocab_in, width, keys, init_std=_INIT_STD, dtype=dtype)
    self.row_embed = layers.Embedding(grid[0] + 1, width, keys, init_std=_INIT_STD, dtype=dtype)
    self.col_embed = layers.Embedding(grid[1] + 1, width, keys, init_std=_INIT_STD, dtype=dtype)
    self.blocks = [Block(width, heads, mlp_ratio, depth, keys, dtype, name=f"block{i}") for i in range(depth)]
    self.norm = layers.LayerNorm(width, last_axis=True, dtype=dtype)
    self.head = layers.Dense(width, vocab_out, keys, init_std=_INIT_STD, dtype=dtype)

  def mask(self):
    """bool [slots, slots]: where slot i attends to slot j."""
    if not self.causal:
      return tf.ones([self.slots, self.slots], tf.bool)
    return tf.linalg.band_part(tf.ones([self.slots, self.slots], tf.bool), -1, 0)

  def _positions(self, slots):
    return self.row_embed(tf.gather(self.rows, slots)) + self.col_embed(tf.gather(self.cols, slots))

  def _logits(self, x):
    return tf.cast(self.head(self.norm(x)), tf.float32)

  def __call__(self, ids, rng=None, stream="transformer", with_attention=False):
    """Logits float32 [b, slots, vocab_out] of ids int32 [b, slots]; dropout when ``rng`` (a ``BatchRng``) is given
    and the rate is positive. With ``with_attention``, also every layer's attention probabilities [b, heads, slots,
    slots] (float32)."""
    slots = int(ids.shape[1])
    x = self.embed(ids) + self._positions(tf.range(slots))[None]
    training = rng is not None and self.dropout > 0

    def dropout(prefix):
      def drop(value, name):
        if not training:
          return value
        keep = rng.uniform(value.shape[1:], f"{stream}/dropout/{prefix}/{name}") >= self.dropout
        return tf.where(keep, value * tf.cast(1.0 / (1.0 - self.dropout), value.dtype), tf.zeros_like(value))
      return drop

    x = dropout("input")(x, "embed")
    mask = self.mask()[:slots, :slots]
    maps = []
    for i, block in enumerate(self.blocks):
      x, probs = block(x, mask, dropout(f"block{i}"))
      maps.append(probs)
    logits = self._logits(x)
    return (logits, maps) if with_attention else logits

  # ---- decoding one slot at a time (causal networks)

  def init_cache(self, batch):
    """Zero keys and values, [slots, batch, heads, head_size] for each layer: a list of (keys, values)."""
    zeros = tf.zeros([self.slots, batch, self.heads, self.head_size], self.compute_dtype)
    return [(zeros, zeros) for _ in self.blocks]

  def step(self, ids, t, cache):
    """(logits float32 [b, vocab_out] at slot t, cache) for ids int32 [b] at slot t, given the cache of slots < t."""
    x = self.embed(ids) + self._positions(t)[None]
    out = []
    for block, (keys, values) in zip(self.blocks, cache):
      x, keys, values = block.step(x, t, keys, values)
      out.append((keys, values))
    return self._logits(x), out
