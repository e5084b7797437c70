"""Where a run computes: the device mesh, several processes, and moving state onto it.

One device (the default on a machine with one) is no mesh at all: the train step runs
as it always did. With more devices a run is data-parallel over a 1-D mesh axis `data`
(each batch split along its first axis, every parameter, statistic and optimizer state
replicated); a `model` axis (a train block's `mesh = {data = 2, model = 2}` or `--mesh`)
splits the parameters a `shard [...]` annotation names. Several processes
(`jax.distributed`) make one mesh over all their devices; each process puts only its own
rows of each global batch on its devices.

Outside the train step (evaluation, checkpoints, the non-finite check) the runtime works
on local copies (`local_copy`), so that what only one process does never waits on the
others.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from graphdl.errors import CliError, GdlError, Span, user_error

DATA, MODEL = "data", "model"  # the mesh axes a run knows
MESH_AXES = (DATA, MODEL)

# how long jax.distributed waits for every process to join: a wrong address or a
# process that never starts is an error after this, not a hang
CONNECT_TIMEOUT_S = int(os.environ.get("GRAPHDL_CONNECT_TIMEOUT", "30"))

# what `jax.distributed.initialize` reads itself (JAX_COORDINATOR_ADDRESS) and the two
# graphdl reads for it with the same prefix; only a set address starts several processes
ENV_ADDRESS, ENV_PROCESSES, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


@dataclass(frozen=True)
class Processes:
    """`--coordinator HOST:PORT --num-processes P --process-id I` (or the environment)."""

    coordinator: str
    count: int
    index: int


def processes_from(coordinator: str | None, count: int | None, index: int | None,
                   environ: Mapping[str, str] = os.environ) -> Processes | None:
    """The several-process setting from the flags, else from the environment; None for a
    one-process run. Flags given partly, a bad address or an index out of range: CliError."""
    flags = {"--coordinator": coordinator, "--num-processes": count, "--process-id": index}
    given = [k for k, v in flags.items() if v is not None]
    if given and len(given) < 3:
        missing = [k for k in flags if k not in given]
        raise CliError(f"{' and '.join(given)} given without {' and '.join(missing)}: a run "
                       "over several processes needs all three")
    if not given:
        if not environ.get(ENV_ADDRESS):
            return None
        coordinator = environ[ENV_ADDRESS]
        count = _env_int(environ, ENV_PROCESSES)
        index = _env_int(environ, ENV_ID)
        where = f"{ENV_ADDRESS}={coordinator}"
    else:
        where = f"--coordinator {coordinator}"
    host, sep, port = str(coordinator).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{where}: expected HOST:PORT, e.g. 127.0.0.1:12345")
    if count < 1:
        raise CliError(f"--num-processes {count}: a run needs at least 1 process")
    if not 0 <= index < count:
        raise CliError(f"--process-id {index} is out of range: with --num-processes {count} "
                       f"it is 0 to {count - 1}")
    return Processes(str(coordinator), count, index)


def _env_int(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name)
    if value is None:
        raise CliError(f"{ENV_ADDRESS} is set but {name} is not: a run over several "
                       f"processes needs {ENV_ADDRESS}, {ENV_PROCESSES} and {ENV_ID}")
    try:
        return int(value)
    except ValueError:
        raise CliError(f"{name}={value} is not a whole number") from None


def parse_mesh(text: str) -> dict[str, int]:
    """`--mesh data=2,model=2` -> {"data": 2, "model": 2}."""
    shape: dict[str, int] = {}
    for item in text.split(","):
        axis, sep, size = item.strip().partition("=")
        axis = axis.strip()
        if not sep or not size.strip().isdigit():
            raise CliError(f"--mesh {text}: expected AXIS=N,..., e.g. data=2,model=2")
        if axis not in MESH_AXES:
            raise CliError(f"--mesh {text}: unknown axis `{axis}`; the axes are "
                           f"{', '.join(MESH_AXES)}")
        if axis in shape:
            raise CliError(f"--mesh {text}: the axis `{axis}` is given twice")
        if int(size) < 1:
            raise CliError(f"--mesh {text}: the axis `{axis}` needs at least 1 device")
        shape[axis] = int(size)
    return shape


def start_processes(p: Processes) -> None:
    """Join the run's other processes (once per Python process). On a CPU the
    cross-process collectives go through gloo, which must be chosen before JAX starts
    its backend.

    XLA's own connection ends the process with an abort (a C++ stack trace, no message
    a person can act on) when a process is missing or the address is wrong; so the
    processes first meet on the coordinator's port themselves, within
    CONNECT_TIMEOUT_S, and only then start `jax.distributed`."""
    if jax.distributed.is_initialized():
        return
    rendezvous(p, CONNECT_TIMEOUT_S)
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - a JAX without the option: its default
        pass
    try:
        jax.distributed.initialize(p.coordinator, p.count, p.index,
                                   initialization_timeout=CONNECT_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - XLA raises its own runtime errors
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CliError(f"--coordinator {p.coordinator}: could not join the run as process "
                       f"{p.index} of {p.count} ({text[:200]})") from None


def rendezvous(p: Processes, timeout: float) -> None:
    """Every process of the run reaches process 0 at the coordinator's address, or a
    CliError says which did not, after `timeout` seconds at most."""
    host, _, port = p.coordinator.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    where = f"--coordinator {p.coordinator}"
    if p.count == 1:
        return
    if p.index == 0:
        try:  # on every interface, as jax.distributed's own service does ([::]:PORT)
            server = _listen(int(port))
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise CliError(f"{where}: process 0 cannot listen on port {port} ({reason}); "
                           "choose a free port") from None
        joined: dict[int, socket.socket] = {}
        with server:
            while len(joined) < p.count - 1:
                server.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    for conn in joined.values():
                        conn.close()
                    missing = sorted(set(range(1, p.count)) - set(joined))
                    raise CliError(f"{where}: process{'es' if len(missing) > 1 else ''} "
                                   f"{', '.join(map(str, missing))} of {p.count} did not join "
                                   f"within {timeout:g} s") from None
                hello = _read_line(conn, deadline)
                parts = hello.split()
                if len(parts) == 3 and parts[0] == "graphdl" and parts[2] == str(p.count) \
                        and parts[1].isdigit() and 0 < int(parts[1]) < p.count \
                        and int(parts[1]) not in joined:
                    joined[int(parts[1])] = conn
                else:
                    conn.sendall(b"no " + (f"process 0 expects {p.count} processes with "
                                           "distinct ids").encode() + b"\n")
                    conn.close()
            for conn in joined.values():
                conn.sendall(b"go\n")
            for conn in joined.values():  # the others close first: the port stays free
                _read_line(conn, deadline)
                conn.close()
        return
    while True:
        try:
            conn = socket.create_connection((host, int(port)),
                                            timeout=max(0.01, deadline - time.monotonic()))
            break
        except OSError as err:
            if time.monotonic() >= deadline:
                raise CliError(f"{where}: no process 0 answered there within {timeout:g} s "
                               f"({err.strerror or err}); start process 0 with the same "
                               "--coordinator, reachable from this machine") from None
            time.sleep(0.2)
    with conn:
        conn.sendall(f"graphdl {p.index} {p.count}\n".encode())
        answer = _read_line(conn, deadline)
    if answer != "go":
        reason = answer[3:] if answer.startswith("no ") else "no answer in time"
        raise CliError(f"{where}: process 0 refused process {p.index} of {p.count} ({reason})")


def _listen(port: int) -> socket.socket:
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(("", port), family=socket.AF_INET6,
                                        dualstack_ipv6=True)
        except OSError:
            pass
    return socket.create_server(("", port))


def _read_line(conn: socket.socket, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = conn.recv(256)
        except OSError:
            break
        if not chunk or len(data) > 1024:
            break
        data += chunk
    return data.decode("ascii", "replace").strip()


def is_writer() -> bool:
    """Process 0 writes metrics, plots, logs and checkpoints; the others only compute."""
    return jax.process_index() == 0


def mesh_shape(devices: int | None, declared: Mapping[str, int] | None,
               span: Span | None = None, batch: int | None = None) -> dict[str, int]:
    """The mesh's axis sizes: `declared` (the train block's `mesh`, or `--mesh`), else
    `devices` along `data`. Without either, every device of one process, or the most of
    them that split `batch` evenly (8 GPUs and a batch of 100 train on 4: a default must
    not refuse to run where one device would; `--devices 8` asks for the error). Checked
    against the devices there are: an error names what is available."""
    available = jax.device_count()
    local = jax.local_device_count()
    here = (f"{available} device{'s' if available != 1 else ''}" +
            (f" ({local} in each of {jax.process_count()} processes)"
             if jax.process_count() > 1 else f" ({jax.devices()[0].platform})"))
    if declared:
        shape = {DATA: 1, MODEL: 1, **declared}
        total = int(np.prod(list(shape.values())))
        if devices is not None and devices != total:
            raise CliError(f"--devices {devices}, but the mesh {_shown(shape)} has {total} "
                           f"devices; --mesh data={devices} replaces the train block's mesh")
        if total > available:
            raise user_error(f"the mesh {_shown(shape)} needs {total} devices, but this run "
                             f"has {here}", span,
                             hint="on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                                  "simulates N devices")
        return shape
    n = available if devices is None else devices
    if devices is None and batch and jax.process_count() == 1:
        n = max(d for d in range(1, available + 1) if batch % d == 0)
    if n < 1:
        raise CliError(f"--devices {n}: a run needs at least 1 device")
    if n > available:
        raise CliError(f"--devices {n}, but this run has {here}; on a CPU, "
                       "XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N")
    if jax.process_count() > 1 and n != available:
        raise CliError(f"--devices {n}: a run over several processes uses all their "
                       f"devices ({available})")
    return {DATA: n, MODEL: 1}


def _shown(shape: Mapping[str, int]) -> str:
    return "{" + ", ".join(f"{k} = {v}" for k, v in shape.items()) + "}"


def make_mesh(shape: Mapping[str, int]) -> Mesh | None:
    """The mesh over the first devices of the run; None for one device in one process
    (the run is then exactly the one-device run it always was)."""
    total = int(np.prod(list(shape.values())))
    if total == 1 and jax.process_count() == 1:
        return None
    axes = tuple(shape)
    auto = (jax.sharding.AxisType.Auto,) * len(axes)  # GSPMD propagates what is not given
    return jax.make_mesh(tuple(shape.values()), axes, auto, devices=jax.devices()[:total])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def param_sharding(mesh: Mesh, spec: tuple | None) -> NamedSharding:
    """A parameter's sharding from its `shard [...]` annotation (None: replicated); a
    mesh axis of one device splits nothing and is left out."""
    axes = [a if a is not None and mesh.shape.get(a, 1) > 1 else None for a in spec or ()]
    return NamedSharding(mesh, PartitionSpec(*axes) if any(axes) else PartitionSpec())


def place(x, sharding: NamedSharding):
    """A host or local value as a global array of `sharding`: every process holds the
    same value (parameters are initialised from the same seed) and puts its own shards."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = place(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_batch(mesh: Mesh, batch: Mapping[str, np.ndarray]) -> dict:
    """The global batch split along its first axis over `data`: each process passes only
    its own rows (`jax.make_array_from_process_local_data`); all read the same global
    batch, shuffled from the seed, and take their slice."""
    sharding = batch_sharding(mesh)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        rows = _own_rows(sharding, value.shape)
        out[name] = jax.make_array_from_process_local_data(sharding, value[rows], value.shape)
    return out


def _own_rows(sharding: NamedSharding, shape: tuple) -> slice:
    """The rows of a global batch that this process's devices hold (one block of them:
    a process's devices are consecutive along `data`)."""
    index = sharding.addressable_devices_indices_map(shape).values()
    starts = [i[0].start or 0 for i in index]
    stops = [shape[0] if i[0].stop is None else i[0].stop for i in index]
    return slice(min(starts), max(stops))


def check_divides(batch: int, mesh: Mesh | None, span: Span | None) -> None:
    """A batch must split evenly over the `data` axis."""
    if mesh is None:
        return
    n = mesh.shape[DATA]
    if batch % n:
        raise user_error(f"the batch of {batch} does not split over {n} devices "
                         f"(the mesh's `data` axis); {batch} is not a multiple of {n}", span,
                         hint=f"use a batch that is a multiple of {n} (--set train.batch=N), "
                              f"or --devices N for an N that divides {batch}")


def check_shards(mesh: Mesh, shards: Mapping[str, tuple]) -> None:
    """Each `shard [...]` annotation against the mesh: name -> (type, spec, span), the
    spec one mesh axis or None per dim. All problems are reported together."""
    problems = []
    for name, (type_, spec, span) in shards.items():
        shape = type_.concrete() or ()
        for dim, axis in enumerate(spec):
            if axis is None:
                continue
            if axis not in mesh.shape:
                have = ", ".join(f"{k} = {v}" for k, v in mesh.shape.items())
                problems.append(user_error(
                    f"`{name}` is split over the mesh axis `{axis}`, but the mesh has no "
                    f"such axis (it is {{{have}}})", span,
                    hint="declare it: `mesh = {data = 2, model = 2}` in the train block, "
                         "or --mesh data=2,model=2").diagnostics[0])
            elif dim < len(shape) and shape[dim] % mesh.shape[axis]:
                problems.append(user_error(
                    f"`{name}` is {type_}: its axis {dim} ({shape[dim]}) does not split "
                    f"over the {mesh.shape[axis]} devices of the mesh axis `{axis}`",
                    span, hint=f"make that dim a multiple of {mesh.shape[axis]}, or change "
                               "the mesh").diagnostics[0])
    if problems:
        raise GdlError(problems)


def local_copy(x):
    """A value this process can use alone: a replicated array's own copy (no transfer),
    a sharded one gathered (across processes, every process must call this together)."""
    if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
        return x
    if x.is_fully_replicated:
        return x.addressable_data(0)
    if x.is_fully_addressable:
        return jax.device_put(x, jax.local_devices()[0])
    return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))


def local_tree(tree):
    return jax.tree_util.tree_map(local_copy, tree)
