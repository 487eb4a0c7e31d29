"""The transformer runner that the prompt encoder and reward-model scoring share.

tokenized text -> `Batch`es of a few shapes (one sequence per row, or packed) -> placed on a device
mesh by a prefetch thread -> a jitted step compiled once per shape -> one output per sequence.
"""

# Batches: one type, one bucket schedule, two ways to fill rows.
from erpjax.runtime._batching import (
    Batch,
    Buckets,
    PackItem,
    ScoreToken,
    Tokenized,
    batch_shapes,
    bucket_lengths,
    build_batch,
    first_fit_decreasing,
    make_batches,
    pack,
)

# Compilation.
from erpjax.runtime._compile import (
    CPU_COMPILER_OPTIONS,
    ShapeCache,
    cpu_compiler_options,
    default_compiler_options,
)

# Running.
from erpjax.runtime._prefetch import prefetch
from erpjax.runtime._runner import Runner, single_device_mesh
