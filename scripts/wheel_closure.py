"""Whether a folder of wheels, with what a machine's python3 already has, meets every requirement:
the package's own (pyproject.toml's dependencies and its `bench` extra) and each wheel's
Requires-Dist, in turn, for CPython 3.12 on x86-64 Linux. scripts/gpu_check.sh runs it on the
wheels that it carries to the GPU machine, which installs them with --no-deps.

    python scripts/wheel_closure.py WHEEL_DIR MACHINE_PACKAGES.txt

MACHINE_PACKAGES.txt: one package a line, with its version where it is known ("torch 2.11.0").
Prints each requirement that nothing meets (or that two wheels of one package would both meet)
and exits 1; else one line of what met them.
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
TARGET = {  # the GPU machine's python3 (PEP 508 marker variables)
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix",
}


def wheel_metadata(wheel: Path) -> list[Requirement]:
    """A wheel's Requires-Dist lines, markers and all."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a Requires-Dist line holds on the target, for the extras asked of its package."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": extra}) for extra in {"", *extras})


# Imported only by what the GPU check never runs (litdata: ShardedDataModule and `prepare`); its
# cloud clients (boto3, botocore, obstore) alone would take more room than may travel.
NOT_RUN_BY_THE_CHECK = {"litdata"}


def project_requirements(pyproject: Path) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["bench"]]]
    return [r for r in requirements if canonicalize_name(r.name) not in NOT_RUN_BY_THE_CHECK]


def read_machine(path: Path) -> dict[NormalizedName, Version | None]:
    packages = {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            packages[canonicalize_name(fields[0])] = Version(fields[1]) if len(fields) > 1 else None
    return packages


def problems(roots: list[Requirement], wheels: list[Path], machine: dict[NormalizedName, Version | None]) -> tuple[list[str], dict[str, list[str]]]:
    """(what is not met, {"wheel" | "machine" | "machine, version unknown": names}) for ``roots``
    and, through each wheel that meets one, that wheel's own requirements."""
    found: dict[NormalizedName, list[tuple[Version, Path]]] = {}
    for wheel in wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        found.setdefault(name, []).append((version, wheel))
    bad = [f"{name}: {len(versions)} wheels ({', '.join(str(v) for v, _ in versions)}); keep one" for name, versions in found.items() if len(versions) > 1]
    met: dict[str, list[str]] = {"wheel": [], "machine": [], "machine, version unknown": []}
    queue, seen = [(r, "pyproject.toml") for r in roots], set()
    while queue:
        requirement, needed_by = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras), str(requirement.specifier)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras), str(requirement.specifier)))
        if name in found:
            version, wheel = found[name][0]
            if not requirement.specifier.contains(version, prereleases=True):
                bad.append(f"{requirement} (for {needed_by}): the wheel is {version}")
            met["wheel"].append(name)
            queue += [(r, name) for r in wheel_metadata(wheel) if applies(r, set(requirement.extras))]
        elif name in machine:
            version = machine[name]
            if version is not None and not requirement.specifier.contains(version, prereleases=True):
                bad.append(f"{requirement} (for {needed_by}): the machine has {version}")
            met["machine" if version else "machine, version unknown"].append(name)
        else:
            bad.append(f"{requirement} (for {needed_by}): neither a wheel here nor on the machine")
    return bad, {how: sorted(set(names)) for how, names in met.items()}


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
    bad, met = problems(project_requirements(REPO / "pyproject.toml"), wheels, read_machine(Path(sys.argv[2])))
    if bad:
        raise SystemExit("requirements not met:\n  " + "\n  ".join(bad))
    print(f"every requirement met: {len(wheels)} wheels ({', '.join(met['wheel'])}); on the machine: {', '.join(met['machine'])}; "
          f"there, version not known: {', '.join(met['machine, version unknown'])}")


if __name__ == "__main__":
    main()
