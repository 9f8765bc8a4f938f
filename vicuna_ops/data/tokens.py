"""The tokenizer as data prep needs it: token counts only, without importing transformers.

transformers costs ~250 MB and ~2.7 CPU-s per process (it pulls in torch); counting tokens
needs neither. ``resolve`` turns ``--tokenizer`` into a ``TokenizerSpec``: the exact Rust
tokenizer transformers would use (``backend_tokenizer``, serialized), plus its BOS/EOS ids
and special tokens. Worker processes rebuild it with the small ``tokenizers`` library.

* ``builtin:tiny`` is built here directly.
* A folder saved from a plain fast tokenizer (``tokenizer_class`` PreTrainedTokenizerFast or
  TokenizersBackend) is read from its files: transformers loads ``tokenizer.json`` as it is.
* Anything else (a Llama folder, a hub id) is loaded once by transformers in a short-lived
  child process, which hands back the serialized backend: exact, and this process stays small.
  A tokenizer with no Rust backend (slow only) is loaded by transformers in each worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError

_PLAIN_CLASSES = {None, "PreTrainedTokenizerFast", "TokenizersBackend"}
_NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
          "mask_token")


@dataclass(frozen=True)
class TokenizerSpec:
    """What a worker needs to count tokens exactly as training will."""

    backend_json: str | None  # tokenizers.Tokenizer.to_str(); None: load ``hf_spec`` with HF
    bos_token_id: int | None
    eos_token_id: int | None
    special_tokens: tuple[str, ...] = ()
    hf_spec: str | None = None

    def load(self) -> Any:
        if self.backend_json is None:
            from vicuna_ops.tokenizer import load_tokenizer

            return load_tokenizer(self.hf_spec or "")
        return CountingTokenizer(self)


class CountingTokenizer:
    """The slice of an HF tokenizer's interface data prep uses, on a bare Rust tokenizer."""

    def __init__(self, spec: TokenizerSpec) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(spec.backend_json)
        self._encode = getattr(self._tokenizer, "encode_batch_fast", None) or \
            self._tokenizer.encode_batch  # encode_batch_fast skips offsets (tokenizers 0.20+)
        self.bos_token_id, self.eos_token_id = spec.bos_token_id, spec.eos_token_id
        self.all_special_tokens = list(spec.special_tokens)
        self.added_tokens_decoder: dict = {}

    def __call__(self, texts: str | list[str], add_special_tokens: bool = False) -> dict:
        single = isinstance(texts, str)
        encodings = self._encode([texts] if single else texts,
                                 add_special_tokens=add_special_tokens)
        ids = [encoding.ids for encoding in encodings]
        return {"input_ids": ids[0] if single else ids}


def resolve(spec: str) -> TokenizerSpec:
    """``--tokenizer`` to a spec, or a UserError naming what is wrong with it."""
    from vicuna_ops.tokenizer import BUILTIN_TINY, SPECIAL_TOKENS, tiny_core

    if spec == BUILTIN_TINY:
        from tokenizers import AddedToken

        core = tiny_core()  # with its special tokens, as transformers' wrapper adds them
        core.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                 for t in SPECIAL_TOKENS])
        return TokenizerSpec(core.to_str(), core.token_to_id("<s>"), core.token_to_id("</s>"),
                             SPECIAL_TOKENS)
    folder = Path(spec).expanduser()
    config = _read_json(folder / "tokenizer_config.json") if folder.is_dir() else None
    if config is not None and (folder / "tokenizer.json").is_file() and \
            config.get("tokenizer_class") in _PLAIN_CLASSES:
        return _from_files(folder, config)
    return _from_transformers(spec)


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _content(token: Any) -> str | None:
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else None


def _from_files(folder: Path, config: dict) -> TokenizerSpec:
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # noqa: BLE001 - the Rust side raises plain Exception
        raise UserError(f"cannot load tokenizer {folder}: {str(exc).splitlines()[0]}",
                        hint="pass the folder save_pretrained wrote, or builtin:tiny") from exc
    named = {**config, **(_read_json(folder / "special_tokens_map.json") or {})}
    tokens = {key: _content(named.get(key)) for key in _NAMED}
    special = {t for t in tokens.values() if t}
    for extra in ("additional_special_tokens", "extra_special_tokens"):
        values = named.get(extra) or []
        special.update(c for c in map(_content, values if isinstance(values, list) else [])
                       if c)
    added = _read_json(folder / "tokenizer.json") or {}
    special.update(t["content"] for t in added.get("added_tokens", [])
                   if isinstance(t, dict) and t.get("special") and t.get("content"))

    def token_id(key: str) -> int | None:
        return backend.token_to_id(tokens[key]) if tokens[key] else None

    eos = token_id("eos_token")
    if eos is None:
        raise UserError(f"tokenizer {folder} has no end-of-sequence token",
                        hint="the Vicuna template ends each reply with </s>")
    return TokenizerSpec(backend.to_str(), token_id("bos_token"), eos,
                         tuple(sorted(special)))


_EXTRACT = """
import json, sys
from vicuna_ops.errors import VopsError
from vicuna_ops.tokenizer import load_tokenizer
try:
    tok = load_tokenizer(sys.argv[1])
except VopsError as exc:
    print(json.dumps({"error": exc.message, "hint": exc.hint})); sys.exit(0)
backend = getattr(tok, "backend_tokenizer", None)
print(json.dumps({"backend": backend.to_str() if backend is not None else None,
                  "bos": tok.bos_token_id, "eos": tok.eos_token_id,
                  "special": sorted(set(map(str, tok.all_special_tokens)))}))
"""


def _from_transformers(spec: str) -> TokenizerSpec:
    from vicuna_ops.lifeline import die_with_parent

    try:
        done = subprocess.run([sys.executable, "-c", _EXTRACT, spec], capture_output=True,
                              text=True, timeout=600, preexec_fn=die_with_parent())
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        detail = locals().get("done")
        tail = (detail.stderr.strip().splitlines() or [""])[-1] if detail else str(exc)
        raise UserError(f"cannot load tokenizer {spec!r}: {tail}",
                        hint="pass a local folder with tokenizer files, or builtin:tiny") \
            from None
    if "error" in answer:
        raise UserError(answer["error"], hint=answer.get("hint"))
    if answer["backend"] is None:
        return TokenizerSpec(None, answer["bos"], answer["eos"], tuple(answer["special"]),
                             hf_spec=spec)
    return TokenizerSpec(answer["backend"], answer["bos"], answer["eos"],
                         tuple(answer["special"]))
