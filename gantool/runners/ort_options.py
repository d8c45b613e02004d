"""ONNX Runtime options bench lets users pass (--ort-option KEY=VALUE): validated against the provider's names, never guessed."""
from __future__ import annotations

import difflib

from gantool.errors import ConfigError

# Option names as onnxruntime-gpu 1.31.1's provider libraries spell them (read from
# libonnxruntime_providers_cuda.so / _tensorrt.so); docs: onnxruntime.ai/docs/execution-providers.
CUDA_KEYS = frozenset({
    "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search", "do_copy_in_default_stream",
    "cudnn_conv_use_max_workspace", "cudnn_conv1d_pad_to_nc1d", "tunable_op_enable", "tunable_op_tuning_enable",
    "tunable_op_max_tuning_duration_ms", "enable_skip_layer_norm_strict_mode", "prefer_nhwc",
    "use_ep_level_unified_stream", "sdpa_kernel", "fuse_conv_bias"})
TRT_KEYS = frozenset({
    "trt_max_workspace_size", "trt_min_subgraph_size", "trt_max_partition_iterations", "trt_int8_enable",
    "trt_int8_calibration_table_name", "trt_int8_use_native_calibration_table", "trt_dla_enable", "trt_dla_core",
    "trt_dump_subgraphs", "trt_engine_cache_enable", "trt_engine_cache_prefix", "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback", "trt_timing_cache_enable",
    "trt_force_timing_cache", "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable",
    "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_tactic_sources", "trt_extra_plugin_lib_paths",
    "trt_engine_hw_compatible", "trt_op_types_to_exclude", "trt_preview_features", "trt_bf16_enable"})
# Session config entries (SessionOptions.add_session_config_entry); they apply to every ort backend.
SESSION_KEYS = frozenset({
    "session.intra_op.allow_spinning", "session.inter_op.allow_spinning", "session.intra_op.spin_duration_us",
    "session.inter_op.spin_duration_us", "session.force_spinning_stop", "session.set_denormal_as_zero",
    "session.disable_prepacking", "session.enable_mem_pattern", "session.enable_cpu_mem_arena",
    "session.dynamic_block_base", "session.disable_cpu_ep_fallback", "session.intra_op_thread_affinities"})
# Set by gantool from its own options, so a number always says what produced it.
OWNED = {
    "device_id": "it follows --device", "user_compute_stream": "bench runs ORT on its own timed stream",
    "has_user_compute_stream": "bench runs ORT on its own timed stream",
    "use_tf32": "the precision sets it: fp32 rows use_tf32=0, tf32 rows use_tf32=1 (--precisions tf32)",
    "enable_cuda_graph": "the backend sets it: use --backends ort-cuda-graph",
    "trt_cuda_graph_enable": "CUDA graphs are ort-cuda-graph's; ort-trt is timed without them",
    "trt_fp16_enable": "the precision sets it: fp16 rows turn it on",
    "trt_profile_min_shapes": "--batch-sizes sets the TensorRT profile", "trt_profile_opt_shapes": "--batch-sizes sets the TensorRT profile",
    "trt_profile_max_shapes": "--batch-sizes sets the TensorRT profile",
    "trt_engine_cache_path": "--cache-dir sets it", "trt_timing_cache_path": "--cache-dir sets it",
    "session.graph_optimization_level": "use --graph-opt-level", "session.intra_op_num_threads": "use --threads",
    "session.inter_op_num_threads": "use --inter-op-threads", "session.enable_profiling": "use --profile DIR",
}
ALL_KEYS = CUDA_KEYS | TRT_KEYS | SESSION_KEYS
GRAPH_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                    "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}


def parse_ort_options(items: list[str] | None) -> dict[str, str]:
    """['KEY=VALUE', ...] -> {KEY: VALUE}; a malformed item, an unknown key or a key gantool sets
    itself is a one-line ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--ort-option {item!r}: expected KEY=VALUE (e.g. gpu_mem_limit=4294967296)")
        if key in OWNED:
            raise ConfigError(f"--ort-option {key}: gantool sets this one itself ({OWNED[key]})")
        if key not in ALL_KEYS:
            near = difflib.get_close_matches(key, sorted(ALL_KEYS), n=3)
            raise ConfigError(f"--ort-option {key}: not an onnxruntime CUDA/TensorRT provider option or session "
                              f"entry gantool knows" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        out[key] = value
    return out


def check_applies(options: dict[str, str], backends: list[str]) -> None:
    """Every option must reach a provider one of the requested backends uses."""
    for key in options:
        users = [b for b in backends if applies(key, b)]
        if not users:
            where = "ort-trt" if key in TRT_KEYS else ("ort-cuda, ort-cuda-graph or ort-trt" if key in CUDA_KEYS else "an ort backend")
            raise ConfigError(f"--ort-option {key}: used by {where}, which is not among the backends ({', '.join(backends)})")


def applies(key: str, backend: str) -> bool:
    from gantool.backends import get

    spec = get(backend)
    if key in SESSION_KEYS:
        return "ort_session" in spec.options
    if key in TRT_KEYS:
        return "trt" in spec.options
    return spec.cuda_provider is not None  # TRT sessions keep a CUDA EP for the rest


def split(options: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(session entries, CUDA EP options, TensorRT EP options)."""
    pick = lambda keys: {k: v for k, v in options.items() if k in keys}  # noqa: E731
    return pick(SESSION_KEYS), pick(CUDA_KEYS), pick(TRT_KEYS)
