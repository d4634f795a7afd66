#pragma once
/// `thaw bench load`: thaw's loader against the machine's own limits, all in one run
/// (BENCHMARKS.md). On N distinct copies of the checkpoint, read in turn so that no measurement
/// reads the bytes the one before it read, with the page cache dropped before each buffered
/// read, it measures:
///   raw O_DIRECT sequential read of the data files: 1 and 2 readers into a reused block-sized
///   buffer each, and 1 reader into memory the size of the model, the limit a loader is held
///   to (on a disk served at memory speed, the reused buffer stays in the CPU's cache);
///   thaw's cold load in place (SSD -> DRAM tier, run there: a host device's cold start) and
///   copied (SSD -> DRAM tier -> device buffer: the path of a device with memory of its own);
///   thaw's load from the DRAM tier, against a 2-thread memcpy of the same size;
///   a plain buffered read; an mmap-and-copy load of the source safetensors (if given).
/// Each figure is the median over rounds, reported in GB/s and as a ratio to its reference. A
/// first, separately reported load of a copy the rounds read last pays the device buffer's
/// first touch, so the rounds measure the loader's steady state.
///
/// With device "cuda" (GPU 0, where thaw is built with CUDA) the loader's figures are a GPU's
/// instead: the cold load SSD -> DRAM tier -> GPU against the same raw reads
/// (thaw_cold_to_gpu), and the load from the DRAM tier to the GPU (thaw_dram_to_gpu) against one
/// cudaMemcpy of the model's size from pinned host memory (cuda_memcpy_h2d), the PCIe limit. A
/// GPU cannot run a model from host memory, so there is no in-place load.

#include "runtime/common/error.hpp"
#include "runtime/loader/loader.hpp"

#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace thaw::bench {

struct load_bench_options {
  std::filesystem::path checkpoint;
  std::filesystem::path source_hf;   ///< optional: the Hugging Face directory it came from
  int copies = 3;                    ///< distinct on-disk copies read in turn (>= 1)
  int rounds = 0;                    ///< 0: as many as copies
  std::filesystem::path work_dir;    ///< where copies go; default: beside the checkpoint
  bool keep_copies = false;          ///< leave the copies for the next run (else removed)
  loader_options loader;             ///< pool_bytes is raised to hold the model if needed
  /// Where the loader puts the model: "host" (the host device) or "cuda" (GPU 0). "cuda" is an
  /// error, naming why, in a build without CUDA or on a machine without a usable GPU.
  std::string device = "host";
  std::function<void(const std::string&)> log; ///< progress lines for a person
};

/// Runs the benchmark; the result is the JSON document `thaw bench load --json` prints.
[[nodiscard]] expected<nlohmann::json> run_load_bench(const load_bench_options& options);

/// A readable table of a result.
[[nodiscard]] std::string format_load_bench(const nlohmann::json& result);

} // namespace thaw::bench
