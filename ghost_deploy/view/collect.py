"""Gather the report page's data from the files ghost-deploy writes: artifact reports, profiles, rankings, bundles.

A `Collector` takes paths one by one (an `.onnx`/`.engine` with its `<file>.json` beside, a report `.json`, a
profile `.json`, a sensitivity `.json`) and opened bundles (a root directory and its verified manifest, from
`ghost_deploy.bundle.runtime`), then `page()` joins them: a profile is attached to the artifact whose sha256 (or
file name) it names, and the model's description is taken from the first report that has one. Files are read
as data that may be anything: a file that is no ghost-deploy report is an InputError naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ghost_deploy.errors import InputError
from ghost_deploy.jsonshape import MAX_JSON_BYTES, read_json_file
from ghost_deploy.targets import TARGETS
from ghost_deploy.view.data import Check, Page, Quantized, Ranking, Target
from ghost_deploy.view.profiles import Profile
from ghost_deploy.view.read import num, obj, seq, text

ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan")
WHAT_TO_GIVE = (
    "give an .onnx/.engine artifact with its <file>.json report beside it, a report, profile (-o of "
    "ghost-deploy profile) or sensitivity .json, or a bundle"
)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, read by `jsonshape` (a regular file, bounded, strict, nested at most 64 deep);
    InputError naming the file when it is missing, too large, too deep or not an object. Its fields are read
    without trusting them (`view.read`): a wrong one shows as "not measured"."""
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; {WHAT_TO_GIVE}")
    data = read_json_file(path, "report", MAX_JSON_BYTES)
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a ghost-deploy report (not a JSON object); {WHAT_TO_GIVE}")
    return data


def kind_of(data: Mapping[str, Any]) -> str | None:
    """What a report is: 'profile', 'sensitivity' or 'artifact'; None when it is none of ghost-deploy's."""
    if data.get("target") == "profile" and isinstance(data.get("results"), list):
        return "profile"
    if isinstance(data.get("sensitivity"), dict) and isinstance(data["sensitivity"].get("layers"), list):
        return "sensitivity"
    described = isinstance(data.get("artifact"), dict) or isinstance(data.get("engine"), dict)
    if data.get("tool") == "ghost-deploy" and isinstance(data.get("target"), str) and described:
        return "artifact"
    return None


def _file_name(value: object) -> str | None:
    """The last component of a recorded path (reports record the path of the machine that wrote them)."""
    path = text(value)
    return path.replace("\\", "/").rsplit("/", 1)[-1] if path else None


class Collector:
    """Accumulates what the given files say; `page()` returns the joined Page."""

    def __init__(self) -> None:
        self._sources: list[str] = []
        self._targets: list[Target] = []
        self._profiles: list[Profile] = []
        self._rankings: list[Ranking] = []
        self._models: list[tuple[str, Mapping[str, Any]]] = []
        self._notes: list[str] = []
        self._given: list[str] = []  # the paths as given, for the commands the page suggests
        self._engine_of: dict[str, str] = {}  # build ONNX file name -> the engine built from it

    def add_path(self, path: Path) -> None:
        """An artifact (with its report beside) or a report, profile or sensitivity JSON."""
        if path.suffix.lower() in ARTIFACT_SUFFIXES:
            report = path.with_name(path.name + ".json")
            if not path.is_file():
                raise InputError(f"{path} does not exist or is not a file; {WHAT_TO_GIVE}")
            if not report.is_file():
                raise InputError(f"{path} has no report {report.name} beside it; give files written by ghost-export")
            self._add_artifact(path.name, str(path), path.parent, read_json(report), path.stat().st_size, path.parent)
        elif path.suffix.lower() == ".json":
            self._add_json(path, read_json(path))
        else:
            raise InputError(f"{path} is neither an artifact nor a JSON report; {WHAT_TO_GIVE}")
        self._sources.append(str(path))
        self._given.append(str(path))

    def add_profile(self, path: Path) -> None:
        """A profile report to attach to the artifact it measured (by sha256, else file name)."""
        data = read_json(path)
        if kind_of(data) != "profile":
            raise InputError(f"{path} is not a profile report (ghost-deploy profile -o FILE writes one)")
        self._profiles.append(Profile.from_dict(path.name, data))
        self._given.append(str(path))

    def _add_json(self, path: Path, data: dict[str, Any]) -> None:
        """Dispatch a report by what it holds."""
        kind = kind_of(data)
        if kind == "profile":
            self._profiles.append(Profile.from_dict(path.name, data))
        elif kind == "sensitivity":
            sens = data["sensitivity"]
            target = (text(data.get("target")) or "").removeprefix("sensitivity (").removesuffix(")")
            title = f"INT8 sensitivity ranking, {target or 'INT8'}"
            self._rankings.append(Ranking.from_dict(title, path.name, sens))
            self._add_model(path.name, data)
        elif kind == "artifact":
            artifact = path.with_name(path.name[: -len(".json")])
            size = artifact.stat().st_size if artifact.is_file() else None
            self._add_artifact(artifact.name, str(path), path.parent, data, size, path.parent)
        else:
            raise InputError(f"{path} is not a ghost-deploy report; {WHAT_TO_GIVE}")

    def add_bundle(self, label: str, root: Path, manifest: Mapping[str, Any], given: Path | None = None) -> None:
        """The artifacts of a bundle already opened and verified (`root` holds the files its `manifest` lists).

        `given` is the bundle as the user named it: a directory's files can be named in suggested commands, an
        archive's (extracted into a temporary `root`) cannot."""
        where = given if given is not None and given.is_dir() else None
        sizes = {text(f.get("path")): num(f.get("bytes")) for f in (obj(x) for x in seq(manifest.get("files")))}
        for entry in (obj(a) for a in seq(manifest.get("artifacts"))):
            name = text(entry.get("file")) or "?"
            report_name = text(entry.get("report"))
            data: dict[str, Any] = {}
            if report_name and (root / report_name).is_file():  # the bundle is verified: it holds no other file
                data = read_json(root / report_name)
            data = {**data, **{k: entry[k] for k in ("verification", "precision_verification") if entry.get(k)}}
            data["target"] = entry.get("target", data.get("target"))
            trt = obj(entry.get("tensorrt"))
            if trt:
                data["simulated"] = bool(trt.get("simulated") or data.get("simulated"))
                data["trt_version"] = {"version": trt.get("version")}
            size = sizes.get(name)  # while pack writes the bundle, the manifest lists no file yet
            if size is None and (root / name).is_file():
                size = (root / name).stat().st_size
            self._add_artifact(name, label, root, data, int(size) if size is not None else None, where)
            if self._targets[-1].profile is None and isinstance(entry.get("latency"), dict):
                self._attach_manifest_latency(entry["latency"])
        self._add_model(
            label,
            {
                "model": manifest.get("model"),
                "preprocessing": manifest.get("preprocessing"),
                "io": {"inputs": [manifest.get("input")], "outputs": [manifest.get("output")]},
            },
        )
        self._sources.append(label)
        if given is not None:
            self._given.append(str(given))

    def _attach_manifest_latency(self, latency: Mapping[str, Any]) -> None:
        """The manifest's latency entry: a whole profile report, or a summary of one."""
        summary = obj(latency.get("summary"))
        if summary:
            source = f"bundle manifest ({_file_name(latency.get('source')) or 'latency'})"
            profile = Profile.from_dict(source, summary)
            if profile.runs:
                self._targets[-1] = dataclasses.replace(self._targets[-1], profile=profile)

    def _add_artifact(
        self, name: str, origin: str, folder: Path, data: Mapping[str, Any], size: int | None, where: Path | None
    ) -> None:
        """One artifact from its report; its profile `<name>.profile.json` when one lies beside it. `where` is the
        folder as a command here would name it (None: inside an archive)."""
        target_name = text(data.get("target"))
        spec = TARGETS.get(target_name or "")
        art, engine = obj(data.get("artifact")), obj(data.get("engine"))
        recorded = num(art.get("bytes")) or num(engine.get("bytes"))
        checks = [Check.from_dict(t, obj(data.get(k))) for k, t in _CHECKS if isinstance(data.get(k), dict)]
        version = text(obj(data.get("trt_version")).get("version"))
        simulated = bool(data.get("simulated") or engine.get("simulated"))
        profile_path = folder / (name + ".profile.json")
        profile = Profile.from_dict(profile_path.name, read_json(profile_path)) if profile_path.is_file() else None
        built_from = _file_name(obj(data.get("onnx")).get("path"))
        if engine and built_from:
            self._engine_of[built_from] = name
        script = _file_name(data.get("build_script"))
        self._targets.append(
            Target(
                file=name,
                origin=origin,
                target=target_name,
                precision=spec.precision if spec else None,
                kind="engine" if (spec and spec.is_engine) or engine else "onnx",
                bytes=size if size is not None else (int(recorded) if recorded is not None else None),
                sha256=text(art.get("sha256")) or text(engine.get("sha256")),
                simulated=simulated,
                tensorrt=(version + (" (simulated)" if simulated else "")) if version else None,
                checks=tuple(checks),
                profile=profile if profile is not None and profile.runs else None,
                role=role_of(name, data),
                path=str(where / name) if where is not None else None,
                not_built=(text(engine.get("why_not")) or "not built") if engine.get("built") is False else None,
                build_script=str(where / script) if where is not None and script else script,
                quantized=Quantized.from_precision(obj(data.get("precision"))),
                command=tuple(str(x) for x in seq(data.get("command"))),
                source_model=text(obj(data.get("input")).get("path")),
                calibration=text(obj(data.get("calibration_data")).get("path")),
            )
        )
        auto = obj(obj(obj(data.get("precision")).get("calibration")).get("auto_exclude"))
        if auto:
            method = text(obj(obj(data.get("precision")).get("calibration")).get("method"))
            self._rankings.append(Ranking.from_dict(f"INT8 sensitivity, {name} (--auto-exclude)", name, auto, method))
        self._add_model(name, data)
        onnx_report = _file_name(data.get("onnx_report"))
        if engine and onnx_report and (folder / onnx_report).is_file():
            self._add_model(onnx_report, read_json(folder / onnx_report))

    def _add_model(self, source: str, data: Mapping[str, Any]) -> None:
        """Remember a report's model description, noting when it differs from the first one seen."""
        model = obj(data.get("model"))
        if not model:
            return
        if self._models:
            first_source, first = self._models[0]
            if obj(first.get("model")).get("arch") != model.get("arch") or (
                obj(first.get("model")).get("input_size") != model.get("input_size")
            ):
                self._notes.append(f"{source} describes another model than {first_source}")
        self._models.append((source, data))

    def page(self) -> Page:
        """Join everything given: profiles attached to their artifacts, the model from the richest report."""
        targets = list(self._targets)
        for profile in self._profiles:
            index = _match(targets, profile)
            if index is None:
                targets.append(_profile_only(profile))
            else:
                targets[index] = dataclasses.replace(targets[index], profile=profile)
        model: dict[str, Any] = {}
        preprocessing: dict[str, Any] = {}
        io: dict[str, Any] = {}
        for _, data in self._models:  # the first report wins each key; later ones fill what it lacks
            model = {**obj(data.get("model")), **model}
            preprocessing = preprocessing or obj(data.get("preprocessing")) or obj(model.get("preprocessing"))
            io = io if seq(io.get("inputs")) else obj(data.get("io"))
        targets = [
            dataclasses.replace(t, built_for=self._engine_of.get(t.file) or _engine_name(t.file))
            if t.role == "build"
            else t
            for t in targets
        ]
        return Page(
            sources=tuple(self._sources),
            given=tuple(self._given),
            model=model,
            preprocessing=preprocessing,
            io=io,
            targets=tuple(targets),
            rankings=tuple(self._rankings),
            notes=tuple(dict.fromkeys(self._notes)),
        )


_CHECKS = (("verification", "verification"), ("precision_verification", "precision preview"))
BUILD_SUFFIX = ".build.onnx"


def role_of(name: str, data: Mapping[str, Any]) -> str:
    """'failed' for a run whose gate failed, 'build' for the ONNX an engine is built from, else 'target'."""
    if ".failed." in name or data.get("status") == "verification_failed" or isinstance(data.get("failed_run"), dict):
        return "failed"
    return "build" if name.endswith(BUILD_SUFFIX) else "target"


def _engine_name(build_onnx: str) -> str | None:
    """`x.trt-fp16.build.onnx` -> `x.trt-fp16.engine` (what ghost-export names the engine beside it)."""
    return build_onnx[: -len(BUILD_SUFFIX)] + ".engine" if build_onnx.endswith(BUILD_SUFFIX) else None


def _match(targets: list[Target], profile: Profile) -> int | None:
    """The artifact a profile measured: by sha256, else by file name."""
    for i, t in enumerate(targets):
        if profile.sha256 and t.sha256 == profile.sha256:
            return i
    for i, t in enumerate(targets):
        if profile.artifact and t.file == profile.artifact:
            return i
    return None


def _profile_only(profile: Profile) -> Target:
    """A row for a profile whose artifact was not given: latency known, accuracy not measured."""
    name = profile.artifact or profile.source
    suffix = name.rsplit(".", 1)[-1].lower()
    kind = "engine" if suffix in ("engine", "plan") else "onnx" if suffix == "onnx" else suffix
    return Target(name, profile.source, None, None, kind, None, profile.sha256, profile.simulated, None, (), profile)
