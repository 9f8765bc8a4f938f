"""Is the model any good: answers, an LLM judge, and ratings with intervals.

    questions  MT-bench-style question files (and the builtin ``builtin:vops-40``)
    store      resumable JSONL of keyed records (append + fsync; a torn last line is dropped)
    client     OpenAI-compatible chat calls (retries with backoff by the openai client)
    pool       run coroutines with a concurrency limit, stop cleanly on a fatal error
    answer     ask a model every question, turn by turn -> ``DIR/answers/NAME.jsonl``
    prompts    the judge's prompts (versioned: a new version means new judgments)
    verdicts   parse ``[[A]]``/``[[B]]``/``[[C]]`` and ``[[rating]]``, tolerating near-misses
    judge      plan the judgments, run them, write ``DIR/judgments/<mode>.jsonl``
    stats      win rates, length-controlled win rates, mean scores with intervals
    ratings    Bradley-Terry ratings with seeded bootstrap intervals (Arena votes use it too)
    summary    judgments + answers -> the report's numbers (``vops eval report --json``)
    report     Rich tables and the ratings plot
    costrun    the judge's token cost as a ledger run of kind "eval"

numpy and openai are imported inside the functions that need them: ``vops --help`` pays
for neither.
"""
