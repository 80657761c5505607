"""Writes tiny llama-architecture GGUF models with random weights, for fast tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["\u2581"] + list(LETTERS) + ["\u2581" + c for c in LETTERS] + [".", ",", "?"]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (259) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(
    path: str | Path, *, n_embd: int = 64, n_layer: int = 4, n_head: int = 4, n_ff: int = 128, seed: int = 0
) -> Path:
    """A llama-architecture model llama.cpp can load: random F32 weights, byte-fallback SPM vocab."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-llama-{seed}")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def mat(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd, np.sqrt(n_embd)))
    for il in range(n_layer):
        w.add_tensor(f"blk.{il}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{il}.{name}.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{il}.ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"blk.{il}.ffn_gate.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{il}.ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{il}.ffn_down.weight", mat(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", mat(n_vocab, n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_bert(path: str | Path, *, n_embd: int = 32, n_layer: int = 2, n_head: int = 2, seed: int = 0) -> Path:
    """A BERT encoder: its llama.cpp graph names no `l_out-<il>` tensor (lingalign cannot serve it)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(LETTERS) + ["##" + c for c in LETTERS]
    n_vocab, n_ff, n_ctx = len(tokens), 2 * n_embd, 64
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_name("tiny-bert")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types([int(gguf.TokenType.CONTROL)] * 5 + [int(gguf.TokenType.NORMAL)] * (n_vocab - 5))
    w.add_token_type_count(2)
    w.add_bos_token_id(2)
    w.add_eos_token_id(3)
    w.add_unk_token_id(1)
    w.add_pad_token_id(0)
    w.add_sep_token_id(3)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vec(n: int, value: float | None = None) -> np.ndarray:
        return np.full(n, value, np.float32) if value is not None else (0.01 * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    w.add_tensor("token_types.weight", mat(2, n_embd))
    w.add_tensor("position_embd.weight", mat(n_ctx, n_embd))
    w.add_tensor("token_embd_norm.weight", vec(n_embd, 1.0))
    w.add_tensor("token_embd_norm.bias", vec(n_embd, 0.0))
    for il in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{il}.{name}.weight", mat(n_embd, n_embd))
            w.add_tensor(f"blk.{il}.{name}.bias", vec(n_embd))
        w.add_tensor(f"blk.{il}.attn_output_norm.weight", vec(n_embd, 1.0))
        w.add_tensor(f"blk.{il}.attn_output_norm.bias", vec(n_embd, 0.0))
        w.add_tensor(f"blk.{il}.ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{il}.ffn_up.bias", vec(n_ff))
        w.add_tensor(f"blk.{il}.ffn_down.weight", mat(n_embd, n_ff))
        w.add_tensor(f"blk.{il}.ffn_down.bias", vec(n_embd))
        w.add_tensor(f"blk.{il}.layer_output_norm.weight", vec(n_embd, 1.0))
        w.add_tensor(f"blk.{il}.layer_output_norm.bias", vec(n_embd, 0.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
