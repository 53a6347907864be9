"""``b2s-bench publish RUN_DIR [--to DIR]``: a folder to commit or share, under ``results/``.

It holds the run's records (``cells/*.json``, only the cells of the suite as last run), the tables
rebuilt from them, and a README that says which command, code and machines made them. Artifacts
(safetensors, often hundreds of MB) stay behind. ``publish`` is the only command that writes
``results/``, and it never deletes anything: a destination that holds files is refused unless
``--merge`` (add these records, keep the others) or ``--replace`` (the old folder is moved aside,
next to it) is given. Nor does it overwrite a file it did not write (``.b2s-published.json`` lists
what it wrote, with sha256): such a file in its way is moved aside first. A run whose records do
not all come from one clean commit, or that is unfinished, is refused unless asked for, so a
published figure is always traceable to code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plugins import Plugins
from ..reporting.site import site_index_page
from ..store.folder import RunStore
from ..store.records import SKIPPED_STATUSES, WRITE_ERRNOS, cannot_write, cell_path, load_json, temp_tag, write_atomic
from .report import write_report

#: what publish wrote in a folder (relative path -> sha256): only those files may it replace
PUBLISHED = ".b2s-published.json"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "publish",
        help="copy a run's records and rebuilt tables into results/",
        description="Copy a run's records (not its artifacts) to DIR, rebuild every table "
        "there from them, and write a README saying what made them.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder (runs/<suite> or --out of `run`)")
    p.add_argument("--to", type=Path, default=None, help="destination (default: results/<suite>)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="the destination has records: add these, keep the others")
    how.add_argument(
        "--replace", action="store_true", help="the destination has records: move it aside (DIR.replaced-TIME) and publish anew"
    )
    p.add_argument("--allow-incomplete", action="store_true", help="publish although some cells of the suite have no record yet")
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="publish records made by uncommitted code, local plugin files or several commits (the README says so)",
    )
    return p


def _values(records: Sequence[Mapping[str, Any]], *keys: str) -> str:
    seen: Counter[str] = Counter()
    for rec in records:
        value: Any = rec
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        seen[str(value)] += 1
    return ", ".join(f"{v} ({n})" if len(seen) > 1 else v for v, n in seen.most_common())


def readme(manifest: dict[str, Any], records: Sequence[Mapping[str, Any]], missing: int) -> str:
    status = Counter(r.get("status") for r in records)
    started = min((r.get("started_at") or "" for r in records), default="")
    finished = max((r.get("finished_at") or "" for r in records), default="")
    seconds = sum(float((r.get("timings") or {}).get("total") or 0.0) for r in records)
    wall = manifest.get("wall_seconds")
    lines = [
        f"# {manifest['suite']}: published results",
        "",
        manifest.get("description") or "",
        "",
        f"- Made by: `{manifest['command']}`"
        if manifest.get("command")
        else f"- Made by: `b2s-bench run` on `{manifest.get('file')}` (the exact command line was not recorded)",
        f"- Suite file: `{manifest.get('file')}`",
        f"- Cells: {len(records)} recorded ({status.get('ok', 0)} ok, "
        + "".join(f"{status[s]} {s}, " for s in SKIPPED_STATUSES if status.get(s))
        + f"{status.get('error', 0)} failed)"
        + (f", {missing} without a record yet" if missing else ""),
        f"- Computed between {started} and {finished} (UTC); {seconds:,.0f} s of cell time in all"
        + (f"; the last run took {wall:,.0f} s wall, peak RSS {manifest.get('peak_rss_mb')} MB" if wall else ""),
        f"- Devices: {_values(records, 'environment', 'device_name')}",
        f"- torch {_values(records, 'environment', 'torch')}; b2s-bench {_values(records, 'environment', 'b2s_bench')}",
        f"- Code (git commit): {_values(records, 'environment', 'git_commit')}",
        *(
            [f"- Local plugin files (outside git): {', '.join(sorted(_local_plugins(records)))}"]
            if _local_plugins(records)
            else []
        ),
        "",
        "`leaderboard.md` is the table to read (also `.csv`, `.html`, `.json`, and the plots); "
        "`records.csv` has every raw field and `failed.csv` the failures. All of them are rebuilt from "
        "`cells/*.json` by `b2s-bench report` on this folder.",
        "",
    ]
    return "\n".join(lines)


def _commit_problems(records: Sequence[Mapping[str, Any]]) -> list[str]:
    commits = Counter(str((r.get("environment") or {}).get("git_commit")) for r in records)
    problems = []
    dirty = [c for c in commits if c.endswith("-dirty") or c == "None"]
    if dirty:
        problems.append(
            f"{sum(commits[c] for c in dirty)} records come from uncommitted code or outside git ({', '.join(sorted(dirty))})"
        )
    if len(commits) > 1:
        problems.append(f"the records come from {len(commits)} commits ({', '.join(sorted(commits))})")
    local = _local_plugins(records)
    if local:
        problems.append(
            f"{sum(local.values())} records were made with local plugin files outside git ({', '.join(sorted(local))}); "
            "package the plugin or commit it as an installed one"
        )
    return problems


def _local_plugins(records: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """How many records loaded each local plugin file (``--plugin FILE.py``): code no commit holds."""
    found: Counter[str] = Counter()
    for rec in records:
        loaded = (rec.get("environment") or {}).get("plugins")
        if isinstance(loaded, dict):
            found.update(name for name, where in loaded.items() if str(where).startswith("local file"))
    return found


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first name nothing holds (a second publish in the
    same second must not meet the first one's ``.replaced-STAMP``)."""
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")


def _prepare_destination(dest: Path, run_dir: Path, args: argparse.Namespace) -> None:
    if dest.resolve() == run_dir.resolve():
        raise UserError(f"{dest} is the run folder itself; publish to another folder (--to)")
    if os.path.lexists(dest) and not dest.is_dir():
        raise UserError(f"--to {dest} is a file, not a folder; nothing was changed. Give a new folder or a published one")
    if not dest.exists() or not any(dest.iterdir()):
        return
    if args.merge:
        return
    if args.replace:
        aside = _free_name(dest.with_name(f"{dest.name}.replaced-{_stamp()}"))
        os.rename(dest, aside)
        print(f"moved the previous {dest} to {aside}")
        return
    held = len(list((dest / "cells").glob("*.json"))) if (dest / "cells").is_dir() else 0
    raise UserError(
        f"{dest} already holds a published run ({held} records); nothing was changed. Pass --merge to add "
        "these records and keep the others, or --replace to move it aside and publish anew"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Placer:
    """Puts files into the folders ``publish`` writes (DEST, and DEST's parent for index.html).

    A new file is added; a file this publish or an earlier one wrote (listed with its sha256 in the
    folder's ``.b2s-published.json``, unchanged since) is replaced; any other file in the way (a
    user's own index.html or README.md, one edited since) is moved aside to ``NAME.replaced-STAMP``
    first. So ``publish`` never overwrites a file it did not write.
    """

    def __init__(self) -> None:
        self.manifests: dict[Path, dict[str, str]] = {}
        self.stamp = _stamp()

    def _files(self, folder: Path) -> dict[str, str]:
        if folder not in self.manifests:
            data, _ = load_json(folder / PUBLISHED)
            files = data.get("files") if isinstance(data, dict) else None
            self.manifests[folder] = {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
        return self.manifests[folder]

    def place(self, folder: Path, rel: str, data: bytes) -> Path:
        files, target = self._files(folder), folder / rel
        digest = _sha256(data)
        if os.path.lexists(target):
            current = _sha256(target.read_bytes()) if target.is_file() and not target.is_symlink() else None
            if current == digest:  # already there as it would be written
                files[rel] = digest
                return target
            if current is None or files.get(rel) != current:
                aside = _free_name(target.with_name(f"{target.name}.replaced-{self.stamp}"))
                os.rename(target, aside)
                print(f"moved {target} aside to {aside} (publish did not write it, or it was edited since)", file=sys.stderr)
        write_atomic(target, data)
        files[rel] = digest
        return target

    def finish(self) -> None:
        for folder, files in self.manifests.items():
            write_atomic(
                folder / PUBLISHED,
                json.dumps({"schema": "b2s-bench/published/1", "files": dict(sorted(files.items()))}, indent=1),
            )


def _stage(
    stage: Path,
    dest: Path,
    run_dir: Path,
    ids: list[str],
    records: Mapping[str, Any],
    manifest: dict[str, Any],
    merge: bool,
    plugins: Plugins,
) -> list[Path]:
    """Build the published folder in ``stage``: records, run.json, tables, README. Returns the tables."""
    (stage / "cells").mkdir()
    if merge and (dest / "cells").is_dir():  # the tables show the records already there too
        for path in (dest / "cells").glob("*.json"):
            shutil.copyfile(path, stage / "cells" / path.name)
    for cid, rec in records.items():
        if rec is not None:
            shutil.copyfile(cell_path(run_dir, cid), cell_path(stage, cid))
    old = RunStore(dest).manifest() if merge else None
    if old is not None:  # merged: the tables show the cells of both
        manifest = {**manifest, "cells": list(dict.fromkeys([*old.get("cells", []), *ids]))}
    write_atomic(stage / "run.json", json.dumps(manifest, indent=1))
    written = write_report(stage, plugins)
    all_records = [r for r in (RunStore(stage).record(c) for c in manifest["cells"]) if r is not None]
    write_atomic(stage / "README.md", readme(manifest, all_records, len(manifest["cells"]) - len(all_records)))
    return written


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    run_dir: Path = args.run_dir
    store = RunStore(run_dir, warn=print)
    manifest = store.require_manifest()
    ids: list[str] = list(manifest.get("cells", []))
    records = {cid: store.record(cid) for cid in ids}
    found = [r for r in records.values() if r is not None]
    missing = [cid for cid, rec in records.items() if rec is None]
    if missing and not args.allow_incomplete:
        raise UserError(
            f"{len(missing)} of {len(ids)} cells of {run_dir} have no record yet (e.g. {missing[0]}); "
            f"finish the run (`b2s-bench run` on the same suite resumes) or pass --allow-incomplete"
        )
    problems = _commit_problems(found)
    if problems and not args.allow_dirty:
        raise UserError(
            "published figures must come from one clean commit, but "
            + "; ".join(problems)
            + ". Commit, rerun with --force, and publish again (or pass --allow-dirty)"
        )
    dest: Path = args.to or Path("results") / manifest["suite"]
    _prepare_destination(dest, run_dir, args)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(
            f"cannot make {dest}: a file is in the way on its path; nothing was changed. Choose another --to"
        ) from None
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise cannot_write(dest / "cells", e) from e
        raise
    # everything is made in a hidden folder next to DEST first, then placed file by file
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.publish-{temp_tag()}.", dir=dest.parent))
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise cannot_write(dest / "cells", e) from e
        raise
    placer = _Placer()
    try:
        written = _stage(stage, dest, run_dir, ids, records, manifest, args.merge, plugins)
        placed = {}
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            rel = path.relative_to(stage).as_posix()
            placed[rel] = placer.place(dest, rel, path.read_bytes())
        shutil.rmtree(stage, ignore_errors=True)  # before the index, which lists the folders next to DEST
        index = placer.place(dest.parent, "index.html", site_index_page(dest.parent).encode())  # the site over every run
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        placer.finish()  # also after a partial publish: what was placed is listed, so a rerun may replace it
    for path in [*(placed[p.relative_to(stage).as_posix()] for p in written), dest / "README.md", index]:
        print(path)
    return 0
