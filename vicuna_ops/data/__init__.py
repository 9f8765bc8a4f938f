"""ShareGPT data preparation: clean, filter and split conversations for training.

    from vicuna_ops.data import prepare, PrepareOptions, CleanOptions
    report = prepare(["sharegpt.json"], "s3://bucket/data/v1", "builtin:tiny")

    reader.py    stream records from a JSON list or JSONL file (gzip too), with locations
    inputs.py    input URIs -> files (a file, or the .json/.jsonl files under a prefix)
    schema.py    what a record must look like; malformed reasons
    html.py      scraped HTML -> markdown, scrape artifacts removed
    markdown.py  the HTML-to-markdown converter itself (ChatGPT's markup, fast)
    language.py  a small dependency-free language guess
    filters.py   role order, empty turns, length, language, blocklist, duplicates
    split.py     segments that fit --max-length, counted with the real tokenizer
    process.py   one record -> one outcome (what the workers run)
    tokens.py    the tokenizer for counting, without transformers
    workers.py   worker processes that die with the run
    pipeline.py  ordering, ids, train/eval draw, writing
    report.py    the counts, which add up

Importing this package is cheap; ``tokenizers`` loads when first used, and transformers only
in a short-lived child process for a tokenizer that needs it (see tokens.py).
"""

from __future__ import annotations

from vicuna_ops.data.pipeline import OUTPUT_FILES, PrepareOptions, prepare
from vicuna_ops.data.process import CleanOptions
from vicuna_ops.data.report import Report

__all__ = ["CleanOptions", "OUTPUT_FILES", "PrepareOptions", "Report", "prepare"]
