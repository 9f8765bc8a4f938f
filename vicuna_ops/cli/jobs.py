"""``vops status [RUN]``, ``vops logs RUN [--follow]``, ``vops cancel RUN``: training runs
as SkyPilot's managed-jobs queue and the checkpoint bucket see them."""

from __future__ import annotations

from typing import Optional

import typer

from vicuna_ops.cli import output


def status(
    run: Optional[str] = typer.Argument(None, help="One run id (default: every training run)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Training runs: SkyPilot job status, recoveries, zone, newest complete checkpoint."""
    from vicuna_ops.launch import jobs

    rows = jobs.status(run)
    if as_json:
        output.print_json(rows[0].to_dict() if run else [row.to_dict() for row in rows])
        return
    output.stdout.print(output.table(
        "training runs",
        ["run", "job", "status", "recoveries", "attempts", "where", "submitted", "ran",
         "checkpoint", "note"],
        [(r.run_id, r.job_id, "BUDGET-STOPPED" if r.budget_stopped else
          r.status or r.ledger_status, r.recovery_count, r.attempts, r.infra,
          output.when(r.submitted_at), output.duration(r.job_duration),
          _checkpoint_cell(r), r.problem)
         for r in rows]))


def _checkpoint_cell(row) -> str | None:  # row: jobs.RunStatus
    """A finished run shows the step its final model was written at, not its last
    checkpoint's (which may be older)."""
    if row.final_step is not None:
        return f"final, step {row.final_step}"
    return None if row.checkpoint_step is None else f"step {row.checkpoint_step}"


def logs(
    run: str = typer.Argument(..., help="The run id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job "
                                                              "ends."),
) -> None:
    """Print a training run's logs (SkyPilot's managed-job logs)."""
    from vicuna_ops.launch import jobs

    code = jobs.logs(run, follow=follow)
    if follow and isinstance(code, int) and code != 0:
        raise typer.Exit(code)


def cancel(
    run: str = typer.Argument(..., help="The run id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cancel a training run's managed job (its checkpoints stay in the bucket)."""
    from vicuna_ops.launch import jobs

    job_id = jobs.cancel(run)
    if as_json:
        output.print_json({"run_id": run, "job_id": job_id, "cancelled": True})
    else:
        output.stdout.print(f"cancelled {output.escape(run)} (managed job {job_id})",
                            highlight=False)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
