"""Registered model versions loaded once per replica, each behind its own ``@serve.batch`` queue.

Concurrent single-row requests for the same version are concatenated into one ``predict`` call; the
answer frame is split back per request. Each version predicts on its own thread, so a version that hangs
holds only its own queue: the event loop keeps answering (and timing out) requests for the others.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpm_ray.data.schema import FrameSchema
from hpm_ray.hpo.online import OnlineCalibration
from hpm_ray.hpo.pyfunc import maturity_s
from hpm_ray.registry.signature import METADATA_KEY
from hpm_ray.serving.online import calibration_of


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def confidence(outputs: dict | None) -> float | None:
    """Mean of the per-row max class probability, from :func:`hpm_ray.serving.predlog.outputs_of` (the rows the
    log stores anyway: no second pass over the answer frame); ``None`` for non-classifiers."""
    if not outputs or "proba" not in outputs or not outputs["proba"]:
        return None
    rows = outputs["proba"]
    return float(sum(map(max, rows)) / len(rows))


@dataclass(frozen=True)
class InputSpec:
    """What a version takes: its columns in order; which are integer (int64 when whole), string, true/false, or optional
    (may be null or left out); the known categories of string columns, to count unseen values; ``nullable``:
    nulls are fine in every column (an hpm-ray model's preprocessing and learners take missing values)."""

    features: tuple[str, ...]
    integer: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()
    booleans: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    categories: dict[str, frozenset] = field(default_factory=dict)
    nullable: bool = False


class ModelPool:
    """Versions of one registered model, loaded on first use (thread-safe) and batched per version."""

    def __init__(
        self, name: str, tracking_uri: str, max_batch_size: int, batch_wait_timeout_s: float, hold_models: bool = True
    ):
        self.name = name
        self.hold_models = hold_models
        self.tracking_uri = tracking_uri
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._models: dict[str, object] = {}
        self._features: dict[str, InputSpec] = {}
        self._online: dict[str, OnlineCalibration | None] = {}
        self._matures: dict[str, float | None] = {}
        self._batchers: dict[str, object] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    @property
    def versions(self) -> set[str]:
        return set(self._features)

    def retain(self, keep) -> None:
        """Drop every version not in ``keep`` (models, batch queues, threads): a replica holds what it serves."""
        keep = {str(v) for v in keep if v}
        with self._lock:
            for version in set(self._features) - keep:
                self._features.pop(version, None)
                self._online.pop(version, None)
                self._matures.pop(version, None)
                self._models.pop(version, None)
                self._batchers.pop(version, None)  # a call still in its queue keeps the queue alive until done
                thread = self._threads.pop(version, None)
                if thread is not None:
                    thread.shutdown(wait=False, cancel_futures=True)  # a hung call ends on its own

    def load(self, version: str) -> InputSpec:
        """Load ``version`` if needed (only its signature unless ``hold_models``); returns its input spec."""
        version = str(version)
        with self._lock:
            if version not in self._features:
                import mlflow

                from hpm_ray._compat import set_mlflow_uris

                set_mlflow_uris(self.tracking_uri)
                if self.hold_models:
                    model = mlflow.pyfunc.load_model(model_uri(self.name, version))
                    self._models[version] = model
                    info = model.metadata
                    self._features[version] = input_spec(info, model)
                else:
                    info = mlflow.models.get_model_info(model_uri(self.name, version))
                    self._features[version] = input_spec(info, None)
                self._online[version] = calibration_of(info.metadata)
                self._matures[version] = maturity_s(info.metadata)
        return self._features[version]

    def online(self, version: str) -> OnlineCalibration | None:
        """The online calibration of a loaded version (a forecaster registered with PID), else None."""
        return self._online.get(str(version))

    def matures_s(self, version: str) -> float | None:
        """Seconds until a loaded forecaster version's forecast is realised (horizon x bar), else None."""
        return self._matures.get(str(version))

    async def aload(self, version: str) -> InputSpec:
        if str(version) in self._features and (not self.hold_models or str(version) in self._models):
            return self._features[str(version)]
        return await asyncio.to_thread(self.load, version)

    async def predict(self, version: str, frame: pd.DataFrame, load: bool = True) -> pd.DataFrame:
        """``version``'s answer for ``frame`` (batched with other calls); ``load=False``: only a version the pool
        holds (a call routed just before a state change must not bring back the version it dropped)."""
        version = str(version)
        if load:
            await self.aload(version)
        elif version not in self._models:
            raise KeyError(f"v{version} is not held by this replica any more")
        batcher = self._batchers.get(version)
        if batcher is None:
            thread = self._threads[version] = ThreadPoolExecutor(1, thread_name_prefix=f"predict-v{version}")
            batcher = self._batchers[version] = self._make_batcher(validated_predict(self._models[version]), thread)
        return await batcher(frame)

    def _make_batcher(self, predict, thread: ThreadPoolExecutor):
        from ray import serve

        @serve.batch(max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s)
        async def run(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
            merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            out = await asyncio.get_running_loop().run_in_executor(thread, predict, merged)
            if not isinstance(out, pd.DataFrame):
                out = pd.DataFrame({"prediction": np.asarray(out)})
            bounds = np.cumsum([0] + [len(f) for f in frames])
            return [out.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]

        return run


def validated_predict(model):
    """``model.predict`` without MLflow's per-call schema enforcement, for frames :func:`parse_payload` built.

    The parser already yields exactly the signature's columns and types (or the model's ``feature_names``),
    so enforcing the schema again only costs time: ~2 ms of CPU per call on 2 cores, more than the trees.
    """
    from hpm_ray._compat import python_model_predict

    return python_model_predict(model)


def input_spec(info, model) -> InputSpec:
    """Input columns from the hpm-ray schema in the model's metadata, else its MLflow signature, else the
    wrapped model's ``feature_names`` (versions registered before signatures)."""
    stored = (info.metadata or {}).get(METADATA_KEY)
    if stored:
        cols = FrameSchema.from_dict(stored).columns
        strings = tuple(c.name for c in cols if c.kind == "category")
        integer = tuple(c.name for c in cols if c.kind == "integer")
        booleans = tuple(c.name for c in cols if c.kind == "boolean")
        return InputSpec(
            tuple(c.name for c in cols),
            integer,
            strings,
            booleans,
            tuple(c.name for c in cols if c.optional),
            {c.name: frozenset(c.categories) for c in cols if c.kind == "category"},
            nullable=True,
        )
    signature = info.signature
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        inputs = signature.inputs
        integer = tuple(c.name for c in inputs.inputs if str(getattr(c.type, "name", c.type)) in ("long", "integer"))
        strings = tuple(c.name for c in inputs.inputs if str(getattr(c.type, "name", c.type)) == "string")
        booleans = tuple(c.name for c in inputs.inputs if str(getattr(c.type, "name", c.type)) == "boolean")
        return InputSpec(tuple(inputs.input_names()), integer, strings, booleans, tuple(inputs.optional_input_names()))
    names = getattr(model.unwrap_python_model(), "feature_names", None) if model is not None else None
    if not names:
        raise ValueError("model has neither an input signature nor feature_names")
    return InputSpec(tuple(names), ())
