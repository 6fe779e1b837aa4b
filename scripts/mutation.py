#!/usr/bin/python3
"""`make mutation`: applies each mutant of tests/mutation/mutants.yaml, one
at a time, to a scratch copy of the tree in build-mutation/src (never the
working tree), rebuilds the module and the unit tests there, and runs the
tests the mutant names. A mutant is killed when one of them fails.

Prints every mutant with its verdict, then `N mutants, K killed` and the
survivors; exits 1 when a mutant survives, or when the list is stale (an
`original` text not found exactly once), a mutant does not build, a
selection runs no test, or the unmutated baseline fails.

    scripts/mutation.py [--only id,id] [--list] [--check] [--no-baseline]
"""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build-mutation"
SRC = SCRATCH / "src"
BUILD = SRC / "build"
MUTANTS = ROOT / "tests" / "mutation" / "mutants.yaml"
PYTEST = ["/usr/bin/python3", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
CXXFLAGS = ["-std=c++17", "-O2", "-g", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
            "-Werror", "-Wshadow", "-Wno-unused-parameter"]
LIBS = ["-lyaml-cpp", "-lssl", "-lcrypto", "-lstdc++", "-lcriterion"]
RUN_TIMEOUT = 900  # seconds per test command; a hang counts as a kill


class Stale(Exception):
    """The mutant list no longer matches the code, or a mutant is unusable."""


def log(msg=""):
    print(msg, flush=True)


def run(cmd, cwd=SRC, env=None, timeout=RUN_TIMEOUT):
    """(returncode, output); the whole process group is killed on timeout."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return -1, out + f"\n[timed out after {timeout}s]"


# -- the scratch copy ----------------------------------------------------------------

def sync_scratch():
    """Copies the working tree's files (tracked and untracked, not ignored)
    into build-mutation/src, touching only files whose content differs, so
    the builds there stay incremental; removes files that disappeared."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    files = {f for f in files if f and (ROOT / f).is_file()}
    SRC.mkdir(parents=True, exist_ok=True)
    for f in files:
        src, dst = ROOT / f, SRC / f
        data = src.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            shutil.copymode(src, dst)
    for dirpath, dirnames, filenames in os.walk(SRC):
        rel = Path(dirpath).relative_to(SRC)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in ("build", ".git")]
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".pytest_cache")]
        for name in filenames:
            if str(rel / name) not in files and rel.parts[:1] != ("build",):
                (Path(dirpath) / name).unlink()


def build_module():
    rc, out = run(["bash", str(SRC / "scripts" / "build.sh")])
    if rc != 0:
        raise Stale("build failed:\n" + out[-3000:])


def build_unit():
    """Unit test objects are compiled once (they depend on lib/*.h and the
    unit sources only, which mutants do not change); the binary is relinked
    against the mutated libbyok.a each time."""
    objdir = BUILD / "unit-obj"
    objdir.mkdir(parents=True, exist_ok=True)
    headers = list((SRC / "lib").glob("*.h")) + list((SRC / "tests" / "unit").glob("*.h"))
    newest_header = max(h.stat().st_mtime for h in headers)
    objs, procs = [], []
    for src in sorted((SRC / "tests" / "unit").glob("test_*.cpp")):
        obj = objdir / (src.stem + ".o")
        objs.append(obj)
        if obj.exists() and obj.stat().st_mtime > max(src.stat().st_mtime, newest_header):
            continue
        procs.append((src, subprocess.Popen(
            ["g++", *CXXFLAGS, f"-I{SRC}", "-c", str(src), "-o", str(obj)], cwd=SRC,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        if len(procs) >= (os.cpu_count() or 2):
            _wait_compile(procs.pop(0))
    for p in procs:
        _wait_compile(p)
    rc, out = run(["g++", *CXXFLAGS, *map(str, objs), str(BUILD / "lib" / "libbyok.a"), *LIBS,
                   "-o", str(BUILD / "unit-tests")])
    if rc != 0:
        raise Stale("unit tests did not link:\n" + out[-3000:])


def _wait_compile(item):
    src, p = item
    out, _ = p.communicate()
    if p.returncode != 0:
        raise Stale(f"{src.name} did not compile:\n{out[-3000:]}")


# -- mutants -----------------------------------------------------------------------------

def load(only):
    mutants = yaml.safe_load(MUTANTS.read_text())
    ids = [m["id"] for m in mutants]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise Stale(f"duplicate mutant ids: {sorted(dup)}")
    for m in mutants:
        missing = {"id", "rule", "file", "original", "replacement"} - set(m)
        if missing or not (m.get("unit") or m.get("pytest")):
            raise Stale(f"mutant {m.get('id')}: needs {sorted(missing) or 'unit or pytest'}")
    if only:
        unknown = set(only) - set(ids)
        if unknown:
            raise Stale(f"unknown mutant ids: {sorted(unknown)}")
        mutants = [m for m in mutants if m["id"] in only]
    return mutants


def check_original(m, text):
    n = text.count(m["original"])
    if n != 1:
        raise Stale(f"mutant {m['id']}: the original text occurs {n} times in {m['file']} "
                    f"(must be exactly once): {m['original']!r}")


def commands(m):
    """The test commands of a mutant, as (label, argv, kind)."""
    out = []
    for pattern in m.get("unit") or []:
        out.append((f"unit {pattern}",
                    [str(BUILD / "unit-tests"), "--jobs", "2", f"--filter={pattern}"], "unit"))
    for sel in m.get("pytest") or []:
        out.append((f"pytest {sel}", PYTEST + shlex.split(sel), "pytest"))
    return out


def passes(label, argv, kind):
    """(True when every test passed, output). Raises Stale when the command
    selected no test at all."""
    env = dict(os.environ, BYOK_MODULE=str(BUILD / "ngx_http_byok_module.so"))
    rc, out = run(argv, env=env)
    if kind == "unit" and "Tested: 0 " in out:
        raise Stale(f"{label}: no unit test matches")
    if kind == "pytest" and rc == 5:
        raise Stale(f"{label}: no test collected\n{out[-1500:]}")
    return rc == 0, out


def rebuild(m):
    if m["file"].startswith("lib/"):
        build_module()  # rebuilds libbyok.a first
        if m.get("unit"):
            build_unit()
    else:
        build_module()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=os.environ.get("ONLY", ""),
                    help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true",
                    help="only check that every original text matches the code once")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run of the selected tests")
    args = ap.parse_args()
    t_start = time.monotonic()
    try:
        mutants = load([i for i in args.only.split(",") if i])
        if args.list:
            for m in mutants:
                log(f"{m['id']:36} {m['file']:40} {m['rule']}")
            return 0
        for m in mutants:  # every original text before any build
            check_original(m, (ROOT / m["file"]).read_text())
        if args.check:
            log(f"{len(mutants)} mutants, every original found once")
            return 0

        log(f"syncing {SRC.relative_to(ROOT)} and building (unmutated)")
        sync_scratch()
        build_module()
        build_unit()
        if not args.no_baseline:
            seen = set()
            for m in mutants:
                for label, argv, kind in commands(m):
                    if label in seen:
                        continue
                    seen.add(label)
                    ok, out = passes(label, argv, kind)
                    if not ok:
                        raise Stale(f"baseline fails without any mutant: {label}\n{out[-3000:]}")
            log(f"baseline: {len(seen)} test selections pass unmutated "
                f"({time.monotonic() - t_start:.0f}s so far)")

        killed, survivors = [], []
        for m in mutants:
            t0 = time.monotonic()
            path = SRC / m["file"]
            original = path.read_text()
            check_original(m, original)
            path.write_text(original.replace(m["original"], m["replacement"]))
            try:
                try:
                    rebuild(m)
                except Stale as e:
                    raise Stale(f"mutant {m['id']} does not build: {e}") from None
                by = None
                for label, argv, kind in commands(m):
                    ok, _ = passes(label, argv, kind)
                    if not ok:
                        by = label
                        break
            finally:
                path.write_text(original)  # newer than the mutated objects: rebuilt next
            took = time.monotonic() - t0
            if by:
                killed.append(m)
                log(f"KILLED    {m['id']:36} by {by} ({took:.0f}s)")
            else:
                survivors.append(m)
                log(f"SURVIVED  {m['id']:36} {m['file']} ({took:.0f}s)")
        build_module()  # leave the scratch build unmutated
    except Stale as e:
        log(f"mutation: {e}")
        return 2

    log()
    log(f"{len(mutants)} mutants, {len(killed)} killed "
        f"({time.monotonic() - t_start:.0f}s)")
    for m in survivors:
        log(f"  survivor {m['id']}: {m['file']}: {m['original']!r} -> {m['replacement']!r}"
            f" — {m['rule']}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
