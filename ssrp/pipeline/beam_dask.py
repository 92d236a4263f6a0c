"""Beam pipelines on a Dask cluster: Beam's Dask runner with what the corpus build needs and it lacks.

Beam's runner (``apache_beam.runners.dask``, Beam 2.77.0) turns a pipeline into ``dask.bag`` operations. Run
as it is, the build would be wrong or serial on it (each point checked by tests/pipeline/test_pipeline_dask.py):

1. a ParDo with tagged outputs (``with_outputs``) sends every output to every consumer: the read failures
   would reach the detector, and every image would reach the dead letters;
2. ``Reshuffle`` is a no-op, and ``Create`` makes one partition of up to 128 elements, so a branch that
   starts from ``Create([None]) | FlatMap(list the inputs)`` runs as one task on one worker;
3. a side input (``combiners.ToList`` has one) is computed by iterating its bag inside the consuming task: a
   nested compute of everything upstream, outside the task graph, that a killed worker loses whole;
4. ``DoFn.setup``/``teardown`` run around every partition, and RunInference keeps only the last model it
   acquired alive in a process, so the detector and the translators reload whenever they alternate.

``DaskBuildRunner`` keeps Beam's overrides (Create, Reshuffle, GroupByKey, Flatten become leaf transforms) and
Beam's translation of GroupByKey and Flatten, and translates the rest itself: ParDo outputs carry their tag;
Reshuffle repartitions (``partitions`` partitions, spread over the workers); Create spreads its values; a
side input is a task-graph dependency; a DoFn instance is set up once per worker process and reused for later
bundles (Beam's contract: one bundle at a time per instance), torn down when the run ends. Batch pipelines in
the global window only, which is what the build is; anything else is refused by name.

Fault tolerance is Dask's: a task whose worker dies is run again elsewhere, and results held by that worker
are recomputed from their inputs. The build's shard commit is idempotent, so a rerun task changes nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskRunner
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupAlsoByWindow,
    _GroupByKeyOnly,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger(__name__)

POOL_PREFIX = "ssrp-dofns-"


class DaskBuildRunner(DaskRunner):
    """Runs a batch pipeline on the Dask cluster of ``client``, in about ``partitions`` parallel pieces."""

    def __init__(self, client, partitions: int):
        super().__init__()
        if partitions < 1:
            raise ValueError(f"partitions must be positive, got {partitions}")
        self._client, self._partitions = client, partitions

    def run_pipeline(self, pipeline, options):
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(self._partitions, run_id=uuid.uuid4().hex)
        pipeline.visit(visitor)
        pool = f"{POOL_PREFIX}{visitor.run_id}"
        self._client.register_plugin(DoFnPool(), name=pool)
        futures = self._client.compute(visitor.leaves())
        return DaskBuildResult(self._client, futures, pool)


class DaskBuildResult(PipelineResult):
    def __init__(self, client, futures: Sequence, pool: str):
        super().__init__(PipelineState.RUNNING)
        self._client, self._futures, self._pool = client, list(futures), pool

    def wait_until_finish(self, duration=None) -> str:
        from distributed import as_completed

        try:
            for _ in as_completed(self._futures, timeout=duration / 1000 if duration else None, with_results=True):
                pass  # gathering raises a task's error here
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self._client.unregister_worker_plugin(self._pool)  # tears the DoFns of this run down on every worker
        return self._state

    def cancel(self) -> str:
        self._client.cancel(self._futures)
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self):
        raise NotImplementedError("the Dask runner keeps no Beam metrics; the corpus's summary.json has the counts")


# ---------------------------------------------------------------------------------------------
# The translation.


class _BagVisitor(PipelineVisitor):
    """One dask bag per output PCollection (keyed by producer and tag)."""

    def __init__(self, partitions: int, run_id: str):
        self.partitions, self.run_id = partitions, run_id
        self.bags: dict[tuple[AppliedPTransform, str | None], Any] = {}
        self.consumed: set[tuple[AppliedPTransform, str | None]] = set()

    def leaves(self) -> list:
        """The bags nothing consumes: computing them computes the whole pipeline."""
        return [bag for key, bag in self.bags.items() if key not in self.consumed]

    def _input(self, pcoll) -> Any:
        key = (pcoll.producer, pcoll.tag)
        self.consumed.add(key)
        return self.bags[key]

    def visit_transform(self, node: AppliedPTransform) -> None:
        import dask.bag as db

        transform = node.transform
        inputs = [self._input(p) for p in node.main_inputs.values() if not isinstance(p, beam.pvalue.PBegin)]
        if isinstance(transform, _Create):
            values = list(transform.values)
            out = db.from_sequence(values or [None], npartitions=max(1, min(len(values), self.partitions)))
            self._set(node, out if values else out.filter(_never))
        elif isinstance(transform, _Reshuffle):
            self._set(node, inputs[0].repartition(npartitions=self.partitions))
        elif isinstance(transform, _Flatten):
            self._set(node, db.concat(inputs))
        elif isinstance(transform, _GroupByKeyOnly):
            _require_global_window(node)
            self._set(node, inputs[0].groupby(_first).map(_grouped_values))
        elif isinstance(transform, _GroupAlsoByWindow):
            self._set(node, inputs[0])  # the grouping above already holds every value (global window)
        elif isinstance(transform, beam.ParDo):
            self._pardo(node, inputs[0])
        else:
            raise NotImplementedError(f"the Dask runner cannot run {type(transform).__name__} ({node.full_label})")

    def _set(self, node: AppliedPTransform, bag) -> None:
        for tag in node.outputs:
            self.bags[(node, tag)] = bag

    def _pardo(self, node: AppliedPTransform, bag) -> None:
        _require_global_window(node)
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        sides = [(type(si), si._view_options(), self._side_values(si)) for si in node.side_inputs]
        # a DoFn with side inputs is cheap here (ToList's default); it gets a fresh instance per bundle
        key = f"{self.run_id}/{node.full_label}" if not sides else None
        spec = _DoFnSpec(key, node.full_label, transform.fn, list(args), dict(kwargs), [s[:2] for s in sides])
        tagged = bag.map_partitions(_run_bundle, spec, *[s[2] for s in sides])
        tags = list(node.outputs)
        if tags == [None]:
            self.bags[(node, None)] = tagged.map(_value)
            return
        for tag in tags:
            self.bags[(node, tag)] = tagged.filter(functools.partial(_has_tag, tag=tag)).map(_value)

    def _side_values(self, side_input):
        """The whole side-input collection as one task-graph dependency."""
        import dask

        bag = self._input(side_input.pvalue)
        return dask.delayed(_concat)(bag.to_delayed(optimize_graph=False))


def _require_global_window(node: AppliedPTransform) -> None:
    for pcoll in node.main_inputs.values():
        windowing = getattr(pcoll, "windowing", None)
        if windowing is not None and windowing.windowfn != GlobalWindows():
            raise NotImplementedError(f"the Dask runner runs the global window only ({node.full_label} is windowed)")


def _never(_) -> bool:
    return False


def _first(item):
    return item[0]


def _grouped_values(group):
    key, items = group
    return key, [_unwindow(v[1]) for v in items]


def _unwindow(value):
    return value.value if isinstance(value, WindowedValue) else value


def _has_tag(item, tag) -> bool:
    return item[0] == tag


def _value(item):
    return item[1]


def _concat(parts: Iterable[list]) -> list:
    return [x for part in parts for x in part]


# ---------------------------------------------------------------------------------------------
# Running a bundle (a partition) on a worker.


class _DoFnSpec:
    """What a task needs to make a DoFn invoker (pickled into the task graph)."""

    def __init__(self, key: str | None, label: str, fn, args: list, kwargs: dict, sides: list):
        self.key, self.label, self.fn, self.args, self.kwargs, self.sides = key, label, fn, args, kwargs, sides


class _Collector(Receiver):
    def __init__(self, tag: str | None, sink: list):
        self._tag, self._sink = tag, sink

    def receive(self, windowed_value) -> None:
        self._sink.append((self._tag, windowed_value.value))


class _Receivers(dict):
    """Tag -> receiver, made on first use; every receiver appends (tag, value) to one list."""

    def __init__(self, sink: list):
        super().__init__()
        self.sink = sink

    def __missing__(self, tag):
        self[tag] = _Collector(tag, self.sink)
        return self[tag]


class _Instance:
    """A set-up DoFn invoker and the list its outputs go to."""

    def __init__(self, spec: _DoFnSpec, side_values: Sequence[list]):
        self.sink: list = []
        receivers = _Receivers(self.sink)
        handler = _OutputHandler(
            window_fn=GlobalWindows(), main_receivers=receivers[None], tagged_receivers=receivers,
            per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
            process_batch_yields_elements=False,
        )
        sides = [SideInputMap(view, options, [_in_global_window(v) for v in values])
                 for (view, options), values in zip(spec.sides, side_values, strict=True)]
        self.invoker = DoFnInvoker.create_invoker(
            DoFnSignature(spec.fn), handler, context=DoFnContext(spec.label, state=None), side_inputs=sides,
            input_args=spec.args, input_kwargs=spec.kwargs, user_state_context=None,
            bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
        )
        self.invoker.invoke_setup()

    def bundle(self, items: Iterable) -> list:
        self.sink.clear()
        self.invoker.invoke_start_bundle()
        for item in items:
            self.invoker.invoke_process(_in_global_window(item))
        self.invoker.invoke_finish_bundle()
        out, self.sink[:] = list(self.sink), []
        return out


def _in_global_window(value) -> WindowedValue:
    return value if isinstance(value, WindowedValue) else WindowedValue(value, 0, (GlobalWindow(),))


def _run_bundle(items, spec: _DoFnSpec, *side_values) -> list:
    """The task of one partition: (tag, value) for every output."""
    pool = _worker_pool(spec.key)
    instance = pool.take(spec.key) if pool else None
    if instance is None:
        instance = _Instance(spec, side_values)
    try:
        out = instance.bundle(items)
    except BaseException:
        instance.invoker.invoke_teardown()  # an instance that failed a bundle is not reused
        raise
    if pool:
        pool.give_back(spec.key, instance)
    else:
        instance.invoker.invoke_teardown()
    return out


def _worker_pool(key: str | None) -> DoFnPool | None:
    if key is None:
        return None
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker
        return None
    return worker.plugins.get(POOL_PREFIX + key.split("/", 1)[0])


class DoFnPool(WorkerPlugin):
    """The set-up DoFn instances of one run on one worker process (a Dask worker plugin: it lives and dies
    with the worker, and unregistering it at the end of the run tears the instances down)."""

    def __init__(self):
        self._idle: dict[str, list[_Instance]] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {}  # sent to the workers empty

    def __setstate__(self, _state):
        self.__init__()

    def setup(self, worker) -> None:
        pass

    def take(self, key: str) -> _Instance | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give_back(self, key: str, instance: _Instance) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(instance)

    def teardown(self, worker) -> None:
        with self._lock:
            instances = [i for idle in self._idle.values() for i in idle]
            self._idle.clear()
        for instance in instances:
            try:
                instance.invoker.invoke_teardown()
            except Exception:  # noqa: BLE001 - teardown is best effort, as in every Beam runner
                logger.warning("DoFn teardown failed", exc_info=True)


def dask_partitions(client, beam_args: Sequence[str] = ()) -> int:
    """Beam's ``--dask_npartitions`` if given, else four partitions per worker thread of the cluster (enough
    to balance uneven partitions; a killed worker loses little)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    chosen = PipelineOptions(list(beam_args)).view_as(DaskOptions).npartitions
    if chosen:
        return chosen
    threads = sum(client.nthreads().values())
    return max(1, 4 * threads)
