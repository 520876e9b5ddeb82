"""Reports for people: markdown summaries with PNG plots, for export folders and search runs.

``write_export_report`` is called by ``export``; ``regenerate`` is ``nas2deploy report DIR``,
which rebuilds the plots and the markdown of each kind of folder (an export, a search run, a
black-box study such as DPC's) from the JSON it holds.
"""

from __future__ import annotations

from pathlib import Path

from nas2deploy.errors import UserError


def regenerate(folder: str | Path) -> Path:
    """Rebuild ``report.md`` and its plots for an export folder, a search run or a black-box study;
    returns the report."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"report {path}: no such folder")
    if (path / "report.json").exists():
        from nas2deploy.nets import load_arch
        from nas2deploy.fileio import read_json
        from nas2deploy.report.export_report import read_export_report, write_export_report
        from nas2deploy.validate import Field

        doc = Field(read_json(path / "report.json", "export report"), f"export report {path / 'report.json'}",
                    "export again or restore the file")
        return write_export_report(path, read_export_report(doc), load_arch(path / "arch.json"))
    if (path / "study.json").exists():
        from nas2deploy.report.study_report import write_study_report

        return write_study_report(path)
    if (path / "log.jsonl").exists():
        from nas2deploy.report.search_report import write_search_report

        return write_search_report(path)
    raise UserError(f"report {path}: neither an export folder (report.json), a search run (log.jsonl) nor a study "
                    "(study.json)")
