#include "runtime/engine/cuda_model_runner.hpp"

#include "gpu/cuda/blas.hpp"
#include "gpu/cuda/communicator.hpp"
#include "gpu/cuda/cuda_check.hpp"
#include "gpu/cuda/cuda_device.hpp"
#include "gpu/host/host_ops.hpp"
#include "gpu/kernels/kernels.hpp"
#include "runtime/loader/loader.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>

namespace thaw {

namespace {

namespace kn = cuda::kernels;
using std::int32_t;
using std::int64_t;

/// Decode batches are padded to one of these sizes, so that a few graphs serve every batch.
constexpr std::array<int64_t, 16> decode_buckets{1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160,
                                                 192, 256, 384, 512};

int64_t decode_bucket(int64_t s) noexcept {
  for (auto b : decode_buckets)
    if (s <= b)
      return b;
  return 0; // larger than any bucket: run eagerly, unpadded
}

int64_t pow2_at_least(int64_t n, int64_t floor) noexcept {
  int64_t p = floor;
  while (p < n)
    p *= 2;
  return p;
}

/// Device memory from the runner's device, with its pointer.
struct dev_array {
  std::unique_ptr<device_buffer> buf;
  [[nodiscard]] void* get() const noexcept { return buf ? buf->data() : nullptr; }
  template <class T>
  [[nodiscard]] T* as() const noexcept {
    return static_cast<T*>(get());
  }
};

/// Pinned host memory (cudaMallocHost) for the per-step metadata and the logits coming back.
class pinned_array {
public:
  pinned_array() = default;
  pinned_array(const pinned_array&) = delete;
  pinned_array& operator=(const pinned_array&) = delete;
  ~pinned_array() { reset(); }
  [[nodiscard]] status resize(std::size_t bytes) {
    if (bytes <= bytes_)
      return {};
    reset();
    THAW_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
    bytes_ = bytes;
    return {};
  }
  void reset() noexcept {
    if (ptr_ != nullptr)
      cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <class T>
  [[nodiscard]] T* as() const noexcept {
    return static_cast<T*>(ptr_);
  }

private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

/// A linear layer's weight as this rank multiplies it: `rows` x `in`, rows `ldw` elements apart.
struct linear_weight {
  const void* data = nullptr;
  int64_t rows = 0, in = 0, ldw = 0;
};

struct layer_weights {
  linear_weight q, k, v, o, gate, up, down;
  const float* attn_norm = nullptr;
  const float* mlp_norm = nullptr;
  const float* q_bias = nullptr;
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
};

/// Where one forward's metadata lies in the staging buffer and on the device, in int32s:
/// tokens [T] | pos [T] | slots [T] | logits rows [W] | block tables [S][MB] | tiles [n][3].
struct step_layout {
  int64_t T = 0, W = 0, S = 0, MB = 0, tiles = 0;
  bool decode = false; ///< one token per item: the decode attention kernel (and graphs)
  [[nodiscard]] int64_t pos() const noexcept { return T; }
  [[nodiscard]] int64_t slots() const noexcept { return 2 * T; }
  [[nodiscard]] int64_t rows() const noexcept { return 3 * T; }
  [[nodiscard]] int64_t tables() const noexcept { return 3 * T + W; }
  [[nodiscard]] int64_t tile_at() const noexcept { return 3 * T + W + S * MB; }
  [[nodiscard]] int64_t ints() const noexcept { return tile_at() + 3 * tiles; }
};

class cuda_model_runner final : public model_runner {
public:
  cuda_model_runner(const model_config& cfg, cuda::cuda_device& dev, cuda_runner_options opt)
      : cfg_(cfg), dev_(dev), opt_(std::move(opt)) {}
  ~cuda_model_runner() override;

  [[nodiscard]] const model_config& config() const noexcept override { return cfg_; }
  [[nodiscard]] std::int32_t num_kv_blocks() const noexcept override { return opt_.num_kv_blocks; }

  status init(const checkpoint& ckpt, const weight_files& files);
  status forward(std::span<const forward_item> batch, std::span<float> logits) override;
  [[nodiscard]] bool samples_on_device() const noexcept override { return true; }
  status forward_sampled(std::span<const forward_item> batch,
                         std::span<const sampling_params> params, std::span<const rng_state> rngs,
                         std::span<expected<sample_result>> out) override;

private:
  expected<dev_array> alloc(std::size_t bytes) {
    THAW_ASSIGN(auto b, dev_.allocate(std::max<std::size_t>(bytes, 256)));
    return dev_array{std::move(b)};
  }
  status prepare_layer(int32_t layer);
  status to_f32(const weight& w, int64_t n, int64_t offset, const float*& out);
  status as_act(const weight& w, int64_t rows, int64_t in, int64_t row0, int64_t col0,
                int64_t cols, linear_weight& out);
  status ensure_capacity(const step_layout& l);
  status enqueue_step(const step_layout& l);
  status run_step(const step_layout& l);
  /// Validates, makes the device current and clears a stale error, runs `body`, and after a
  /// failure lets enqueued work end before the buffers it reads are reused.
  template <class Body>
  status guarded(std::span<const forward_item> batch, std::size_t logits_size, Body&& body);
  /// Stages the batch's metadata and enqueues the step; the logits are then on the device.
  expected<step_layout> enqueue_forward(std::span<const forward_item> batch,
                                        const forward_shape& shape);
  status copy_logits(std::span<const forward_item> batch, const step_layout& l,
                     std::span<float> logits);
  status sample_rows(std::span<const forward_item> batch, const step_layout& l,
                     std::span<const sampling_params> params, std::span<const rng_state> rngs,
                     std::span<expected<sample_result>> out);
  status linear(const linear_weight& w, const void* x, int64_t T, float* y);

  model_config cfg_;
  cuda::cuda_device& dev_;
  cuda_runner_options opt_;
  cudaStream_t stream_ = nullptr;
  std::optional<cuda::blas> blas_;

  // The model as this rank computes it.
  int64_t nh_ = 0, nkv_ = 0, f_ = 0; ///< local query heads, KV heads, intermediate width
  int64_t head_row0_ = 0, kv_row0_ = 0, f_row0_ = 0;
  dtype act_ = dtype::f32; ///< element type of every GEMM (the q projection's type)
  model_tensors tensors_; ///< where each tensor lies, as loaded (read by prepare_layer)
  linear_weight lm_head_;
  const float* final_norm_ = nullptr;
  std::vector<layer_weights> layers_;
  std::vector<bool> ready_; ///< per gate index (layer + 1): weights checked and converted
  std::vector<dev_array> owned_; ///< converted weights (norms, biases, other-typed matrices)
  dev_array inv_freq_;
  dev_array kv_;
  int64_t layer_kv_floats_ = 0; ///< one layer's keys (or values)

  // Per-forward buffers, grown to fit; growing drops the graphs that point into them.
  int64_t cap_t_ = 0, cap_w_ = 0, cap_ints_ = 0;
  int64_t cap_mb_ = 0; ///< decode block-table width att_scratch_ is sized for
  dev_array x_, xn_, q_, k_, v_, att_, tmp_, g_, u_, gu_, xl_, logits_, meta_;
  dev_array att_scratch_; ///< kernels::attention_decode's partials
  pinned_array staging_, logits_host_;
  dev_array sample_in_, sample_out_;           ///< kernels::sample's requests and results
  pinned_array sample_staging_, sample_back_;
  /// Per (padded batch, block-table width): null once the shape has run eagerly (the warm-up:
  /// kernels loaded and cuBLAS's choices made outside any capture), then its graph.
  std::map<std::pair<int64_t, int64_t>, cudaGraphExec_t> graphs_;
  bool graphs_broken_ = false;
  void drop_graphs() noexcept {
    for (auto& [key, exec] : graphs_)
      if (exec != nullptr)
        cudaGraphExecDestroy(exec);
    graphs_.clear();
  }
};

cuda_model_runner::~cuda_model_runner() {
  (void)dev_.make_current();
  if (stream_ != nullptr)
    cudaStreamSynchronize(stream_);
  drop_graphs();
  blas_.reset();
  if (stream_ != nullptr)
    cudaStreamDestroy(stream_);
}

status cuda_model_runner::to_f32(const weight& w, int64_t n, int64_t offset, const float*& out) {
  THAW_ASSIGN(auto a, alloc(static_cast<std::size_t>(n) * sizeof(float)));
  THAW_CUDA_CHECK(kn::convert(w.data + offset * static_cast<int64_t>(dtype_size(w.type)), w.type,
                              a.get(), dtype::f32, n, stream_));
  out = a.as<const float>();
  owned_.push_back(std::move(a));
  return {};
}

status cuda_model_runner::as_act(const weight& w, int64_t rows, int64_t in, int64_t row0,
                                 int64_t col0, int64_t cols, linear_weight& out) {
  // This rank's block: rows [row0, row0 + rows) and columns [col0, col0 + cols) of a matrix
  // `in` wide. In the GEMM's type it is used where it lies (a strided view); otherwise the
  // block is converted once into memory of its own.
  const auto esz = static_cast<int64_t>(dtype_size(w.type));
  const std::byte* at = w.data + (row0 * in + col0) * esz;
  if (w.type == act_) {
    out = {at, rows, cols, in};
    return {};
  }
  const auto act_bytes = static_cast<int64_t>(dtype_size(act_));
  THAW_ASSIGN(auto a, alloc(static_cast<std::size_t>(rows * cols * act_bytes)));
  if (cols == in) // whole rows: one conversion
    THAW_CUDA_CHECK(kn::convert(at, w.type, a.get(), act_, rows * cols, stream_));
  else
    for (int64_t r = 0; r < rows; ++r)
      THAW_CUDA_CHECK(kn::convert(at + r * in * esz, w.type,
                                  a.as<std::byte>() + r * cols * act_bytes, act_, cols, stream_));
  out = {a.get(), rows, cols, cols};
  owned_.push_back(std::move(a));
  return {};
}

status cuda_model_runner::init(const checkpoint& ckpt, const weight_files& files) {
  const auto& c = cfg_;
  const std::string who = "cuda runner";
  THAW_TRY(check_runner_config(c, opt_.num_kv_blocks, who));
  if (c.head_dim > 256)
    return make_error(errc::invalid_argument, who + ": head_dim " + std::to_string(c.head_dim) +
                                                  " above the attention kernels' 256");
  const int ws = opt_.comm != nullptr ? opt_.comm->world_size() : 1;
  const int rank = opt_.comm != nullptr ? opt_.comm->rank() : 0;
  if (c.num_heads % ws != 0 || c.num_kv_heads % ws != 0 || c.intermediate_size % ws != 0)
    return make_error(errc::invalid_argument,
                      who + ": heads, KV heads and intermediate size must divide by the " +
                          std::to_string(ws) + " ranks of the tensor-parallel group");
  if (opt_.comm != nullptr && opt_.comm->device() != dev_.ordinal())
    return make_error(errc::invalid_argument,
                      who + ": the communicator's GPU is not the runner's (" + dev_.name() + ")");
  THAW_TRY(dev_.make_current());
  THAW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  THAW_ASSIGN(auto b, cuda::blas::create(stream_));
  blas_.emplace(std::move(b));

  const auto hd = static_cast<int64_t>(c.head_dim);
  nh_ = static_cast<int64_t>(c.num_heads) / ws;
  nkv_ = static_cast<int64_t>(c.num_kv_heads) / ws;
  f_ = static_cast<int64_t>(c.intermediate_size) / ws;
  head_row0_ = rank * nh_ * hd;
  kv_row0_ = rank * nkv_ * hd;
  f_row0_ = rank * f_;

  // Find every tensor now (shapes and bounds are checked against the files up front); read
  // none of their bytes until prepare_layer, which may wait for the loader.
  THAW_ASSIGN(tensors_, find_model_tensors(ckpt, files, who));
  act_ = c.num_layers > 0 ? tensors_.layers[0].q.type : tensors_.lm_head.type;
  layers_.resize(c.num_layers);
  ready_.assign(c.num_layers + 2, false);

  const auto inv = host::rope_inv_freq(c);
  THAW_ASSIGN(inv_freq_, alloc(inv.size() * sizeof(double)));
  THAW_CUDA_CHECK(cudaMemcpyAsync(inv_freq_.get(), inv.data(), inv.size() * sizeof(double),
                                  cudaMemcpyHostToDevice, stream_));
  layer_kv_floats_ = static_cast<int64_t>(opt_.num_kv_blocks) * nkv_ * kv_block_tokens * hd;
  THAW_ASSIGN(kv_, alloc(static_cast<std::size_t>(2 * static_cast<int64_t>(c.num_layers) *
                                                  layer_kv_floats_) *
                         sizeof(float)));
  THAW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {};
}

status cuda_model_runner::prepare_layer(int32_t layer) {
  const auto gate = static_cast<std::size_t>(layer + 1);
  if (ready_[gate])
    return {};
  if (opt_.layer_ready) {
    THAW_TRY(opt_.layer_ready(layer));
    // The callback is the caller's code and may have made another GPU current on this thread;
    // everything below launches onto this runner's stream.
    THAW_TRY(dev_.make_current());
  }
  const auto& c = cfg_;
  const auto h = static_cast<int64_t>(c.hidden_size);
  const auto hd = static_cast<int64_t>(c.head_dim);
  const auto nl = static_cast<int32_t>(c.num_layers);
  if (layer == -1) {
    // The embedding table is read in its own type by the embedding kernel.
  } else if (layer == nl) {
    THAW_TRY(to_f32(tensors_.final_norm, h, 0, final_norm_));
    THAW_TRY(as_act(tensors_.lm_head, static_cast<int64_t>(c.vocab_size), h, 0, 0, h, lm_head_));
  } else {
    const auto& s = tensors_.layers[static_cast<std::size_t>(layer)];
    auto& w = layers_[static_cast<std::size_t>(layer)];
    const auto qd = static_cast<int64_t>(c.num_heads) * hd;
    const auto f = static_cast<int64_t>(c.intermediate_size);
    // Column-parallel: this rank's output rows. Row-parallel: its input columns.
    THAW_TRY(as_act(s.q, nh_ * hd, h, head_row0_, 0, h, w.q));
    THAW_TRY(as_act(s.k, nkv_ * hd, h, kv_row0_, 0, h, w.k));
    THAW_TRY(as_act(s.v, nkv_ * hd, h, kv_row0_, 0, h, w.v));
    THAW_TRY(as_act(s.o, h, qd, 0, head_row0_, nh_ * hd, w.o));
    THAW_TRY(as_act(s.gate, f_, h, f_row0_, 0, h, w.gate));
    THAW_TRY(as_act(s.up, f_, h, f_row0_, 0, h, w.up));
    THAW_TRY(as_act(s.down, h, f, 0, f_row0_, f_, w.down));
    THAW_TRY(to_f32(s.attn_norm, h, 0, w.attn_norm));
    THAW_TRY(to_f32(s.mlp_norm, h, 0, w.mlp_norm));
    if (c.attention_bias) {
      THAW_TRY(to_f32(s.q_bias, nh_ * hd, head_row0_, w.q_bias));
      THAW_TRY(to_f32(s.k_bias, nkv_ * hd, kv_row0_, w.k_bias));
      THAW_TRY(to_f32(s.v_bias, nkv_ * hd, kv_row0_, w.v_bias));
    }
  }
  ready_[gate] = true;
  return {};
}

status cuda_model_runner::ensure_capacity(const step_layout& l) {
  if (l.T <= cap_t_ && l.W <= cap_w_ && l.ints() <= cap_ints_ && (!l.decode || l.MB <= cap_mb_))
    return {};
  // Grow geometrically; buffers move, so graphs captured over the old ones go.
  THAW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  drop_graphs();
  const auto& c = cfg_;
  const int64_t t = pow2_at_least(l.T, 16), w = pow2_at_least(l.W, 16),
                ints = pow2_at_least(l.ints(), 4096);
  const auto h = static_cast<int64_t>(c.hidden_size);
  const auto hd = static_cast<int64_t>(c.head_dim);
  const auto V = static_cast<int64_t>(c.vocab_size);
  const auto f4 = [](int64_t n) { return static_cast<std::size_t>(n) * sizeof(float); };
  // GEMM inputs are sized for f32, the widest act type.
  THAW_ASSIGN(x_, alloc(f4(t * h)));
  THAW_ASSIGN(xn_, alloc(f4(t * h)));
  THAW_ASSIGN(q_, alloc(f4(t * nh_ * hd)));
  THAW_ASSIGN(k_, alloc(f4(t * nkv_ * hd)));
  THAW_ASSIGN(v_, alloc(f4(t * nkv_ * hd)));
  THAW_ASSIGN(att_, alloc(f4(t * nh_ * hd)));
  THAW_ASSIGN(tmp_, alloc(f4(t * h)));
  THAW_ASSIGN(g_, alloc(f4(t * f_)));
  THAW_ASSIGN(u_, alloc(f4(t * f_)));
  THAW_ASSIGN(gu_, alloc(f4(t * f_)));
  THAW_ASSIGN(xl_, alloc(f4(w * h)));
  THAW_ASSIGN(logits_, alloc(f4(w * V)));
  THAW_ASSIGN(meta_, alloc(static_cast<std::size_t>(ints) * sizeof(int32_t)));
  THAW_TRY(staging_.resize(static_cast<std::size_t>(ints) * sizeof(int32_t)));
  THAW_TRY(logits_host_.resize(f4(w * V)));
  const auto requests = static_cast<std::size_t>(w) * sizeof(kn::sample_request);
  const auto results = static_cast<std::size_t>(w) * sizeof(kn::sample_output);
  THAW_ASSIGN(sample_in_, alloc(requests));
  THAW_ASSIGN(sample_out_, alloc(results));
  THAW_TRY(sample_staging_.resize(requests));
  THAW_TRY(sample_back_.resize(results));
  // Decode attention's scratch, for every decode bucket up to t at table widths up to mb (it
  // grows with MB, not with S), so that only a wider table than seen so far reallocates.
  const int64_t mb = l.decode ? std::max(l.MB, cap_mb_) : cap_mb_;
  int64_t scratch = 0;
  for (const auto b : decode_buckets)
    if (b <= t)
      scratch = std::max(scratch, kn::attention_decode_scratch_floats(b, nh_, hd,
                                                                      static_cast<int32_t>(mb)));
  THAW_ASSIGN(att_scratch_, alloc(f4(scratch)));
  cap_t_ = t;
  cap_w_ = w;
  cap_ints_ = ints;
  cap_mb_ = mb;
  return {};
}

status cuda_model_runner::linear(const linear_weight& w, const void* x, int64_t T, float* y) {
  return blas_->linear(w.data, act_, w.rows, w.in, w.ldw, x, w.in, T, y, w.rows);
}

status cuda_model_runner::enqueue_step(const step_layout& l) {
  const auto& c = cfg_;
  const auto h = static_cast<int64_t>(c.hidden_size);
  const auto hd = static_cast<int64_t>(c.head_dim);
  const auto eps = c.rms_norm_eps;
  const auto window = static_cast<int32_t>(c.sliding_window);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto* meta = meta_.as<const int32_t>();
  const int32_t* tokens = meta;
  const int32_t* pos = meta + l.pos();
  const int32_t* slots = meta + l.slots();
  const int32_t* rows = meta + l.rows();
  const int32_t* tables = meta + l.tables();
  const auto* tiles = reinterpret_cast<const kn::attention_tile*>(meta + l.tile_at());
  auto* x = x_.as<float>();
  auto* q = q_.as<float>();
  auto* k = k_.as<float>();
  auto* v = v_.as<float>();
  auto* tmp = tmp_.as<float>();
  auto* g = g_.as<float>();
  auto* u = u_.as<float>();

  // Weights first used now wait for the loader, layer by layer, as the step reaches them: the
  // GPU runs the first layers while later ones are still being copied. (Never while a graph is
  // captured: run_step captures only once every layer is ready.)
  THAW_TRY(prepare_layer(-1));
  const weight& embed = tensors_.embed;
  THAW_CUDA_CHECK(kn::embedding(embed.data, embed.type, h, tokens, l.T, x, stream_));
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    THAW_TRY(prepare_layer(static_cast<int32_t>(i)));
    const auto& w = layers_[i];
    float* kc = kv_.as<float>() + 2 * static_cast<int64_t>(i) * layer_kv_floats_;
    float* vc = kc + layer_kv_floats_;
    THAW_CUDA_CHECK(kn::rmsnorm(x, nullptr, l.T, w.attn_norm, h, eps, xn_.get(), act_, stream_));
    THAW_TRY(linear(w.q, xn_.get(), l.T, q));
    THAW_TRY(linear(w.k, xn_.get(), l.T, k));
    THAW_TRY(linear(w.v, xn_.get(), l.T, v));
    if (w.q_bias != nullptr) {
      THAW_CUDA_CHECK(kn::add_bias(q, w.q_bias, l.T, nh_ * hd, stream_));
      THAW_CUDA_CHECK(kn::add_bias(k, w.k_bias, l.T, nkv_ * hd, stream_));
      THAW_CUDA_CHECK(kn::add_bias(v, w.v_bias, l.T, nkv_ * hd, stream_));
    }
    THAW_CUDA_CHECK(kn::rope(q, l.T, nh_, hd, pos, inv_freq_.as<const double>(), stream_));
    THAW_CUDA_CHECK(kn::rope(k, l.T, nkv_, hd, pos, inv_freq_.as<const double>(), stream_));
    THAW_CUDA_CHECK(kn::kv_write(k, v, l.T, nkv_, hd, slots, kc, vc, stream_));
    if (l.decode)
      THAW_CUDA_CHECK(kn::attention_decode(q, kc, vc, l.S, pos, tables, static_cast<int32_t>(l.MB),
                                           nh_, nkv_, hd, window, scale, att_.get(), act_,
                                           att_scratch_.as<float>(), stream_));
    else
      THAW_CUDA_CHECK(kn::attention_prefill(q, kc, vc, tiles, l.tiles, pos, tables,
                                            static_cast<int32_t>(l.MB), nh_, nkv_, hd, window,
                                            scale, att_.get(), act_, stream_));
    THAW_TRY(linear(w.o, att_.get(), l.T, tmp));
    if (opt_.comm != nullptr)
      THAW_TRY(opt_.comm->all_reduce(tmp, static_cast<std::size_t>(l.T * h), stream_));
    THAW_CUDA_CHECK(kn::add(x, tmp, l.T * h, stream_));
    THAW_CUDA_CHECK(kn::rmsnorm(x, nullptr, l.T, w.mlp_norm, h, eps, xn_.get(), act_, stream_));
    THAW_TRY(linear(w.gate, xn_.get(), l.T, g));
    THAW_TRY(linear(w.up, xn_.get(), l.T, u));
    THAW_CUDA_CHECK(kn::silu_mul(g, u, l.T * f_, gu_.get(), act_, stream_));
    THAW_TRY(linear(w.down, gu_.get(), l.T, tmp));
    if (opt_.comm != nullptr)
      THAW_TRY(opt_.comm->all_reduce(tmp, static_cast<std::size_t>(l.T * h), stream_));
    THAW_CUDA_CHECK(kn::add(x, tmp, l.T * h, stream_));
  }
  THAW_TRY(prepare_layer(static_cast<int32_t>(layers_.size())));
  if (l.W > 0) {
    THAW_CUDA_CHECK(kn::rmsnorm(x, rows, l.W, final_norm_, h, eps, xl_.get(), act_, stream_));
    THAW_TRY(linear(lm_head_, xl_.get(), l.W, logits_.as<float>()));
  }
  return {};
}

status cuda_model_runner::run_step(const step_layout& l) {
  const bool all_ready = std::all_of(ready_.begin(), ready_.end(), [](bool r) { return r; });
  if (!l.decode || !opt_.cuda_graphs || graphs_broken_ || !all_ready)
    return enqueue_step(l);
  const auto key = std::make_pair(l.S, l.MB);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    // A shape's first step runs eagerly: lazily loaded kernels are loaded and cuBLAS picks its
    // kernels for this size outside a capture (the same kernels, so the same logits).
    THAW_TRY(enqueue_step(l));
    graphs_.emplace(key, nullptr);
    return {};
  }
  if (it->second == nullptr) {
    // Capture the step once for this shape. A failed capture (a driver that cannot capture
    // some call) leaves graphs off for this runner and the step runs eagerly.
    cudaGraph_t graph = nullptr;
    THAW_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const status body = enqueue_step(l);
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (body && ended == cudaSuccess && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess) {
      cudaGraphDestroy(graph);
      it->second = exec;
    } else {
      if (graph != nullptr)
        cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      graphs_broken_ = true;
      return enqueue_step(l);
    }
  }
  THAW_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
  return {};
}

template <class Body>
status cuda_model_runner::guarded(std::span<const forward_item> batch, std::size_t logits_size,
                                  Body&& body) {
  THAW_ASSIGN(const forward_shape shape,
              validate_forward(cfg_, opt_.num_kv_blocks, batch, logits_size));
  if (batch.empty())
    return {};
  THAW_TRY(dev_.make_current());
  // An error left in this thread's slot by an earlier, already reported call would be returned
  // by the first launcher below as its own (and, in a capture, turn graphs off for good).
  (void)cudaGetLastError();
  status s = body(shape);
  if (!s) {
    // Work enqueued before the failure still reads the pinned staging buffer (the metadata
    // copy) and the per-forward buffers: let it end before the next forward rewrites them.
    (void)cudaStreamSynchronize(stream_);
    (void)cudaGetLastError();
  }
  return s;
}

status cuda_model_runner::forward(std::span<const forward_item> batch, std::span<float> logits) {
  return guarded(batch, logits.size(), [&](const forward_shape& shape) -> status {
    THAW_ASSIGN(const step_layout l, enqueue_forward(batch, shape));
    return copy_logits(batch, l, logits);
  });
}

status cuda_model_runner::forward_sampled(std::span<const forward_item> batch,
                                          std::span<const sampling_params> params,
                                          std::span<const rng_state> rngs,
                                          std::span<expected<sample_result>> out) {
  std::size_t want = 0;
  for (const auto& it : batch)
    want += it.want_logits ? 1 : 0;
  if (params.size() != want || rngs.size() != want || out.size() != want)
    return make_error(errc::invalid_argument,
                      "forward_sampled: " + std::to_string(want) + " items want a token, given " +
                          std::to_string(params.size()) + " parameters, " +
                          std::to_string(rngs.size()) + " streams, " +
                          std::to_string(out.size()) + " results");
  // No logits come to the host: the validation's logits span is the exact size it asks for.
  const std::size_t logits_size = want * static_cast<std::size_t>(cfg_.vocab_size);
  return guarded(batch, logits_size, [&](const forward_shape& shape) -> status {
    THAW_ASSIGN(const step_layout l, enqueue_forward(batch, shape));
    return sample_rows(batch, l, params, rngs, out);
  });
}

expected<step_layout> cuda_model_runner::enqueue_forward(std::span<const forward_item> batch,
                                                         const forward_shape& shape) {
  step_layout l;
  const auto S = static_cast<int64_t>(batch.size());
  l.decode = shape.tokens == S;
  int64_t mb = 1;
  for (const auto& it : batch)
    mb = std::max<int64_t>(mb,
                           kv_blocks_for(it.start_pos + static_cast<int64_t>(it.tokens.size())));
  const int64_t bucket = l.decode ? decode_bucket(S) : 0;
  if (l.decode && bucket > 0) {
    // Padded decode: every row computes logits; the wanted ones are picked on the way out.
    l.T = l.S = l.W = bucket;
    l.MB = pow2_at_least(mb, 16);
  } else {
    l.decode = l.decode && bucket > 0;
    l.T = shape.tokens;
    l.S = S;
    l.W = shape.want_logits;
    l.MB = mb;
    for (const auto& it : batch)
      l.tiles += (static_cast<int64_t>(it.tokens.size()) + kn::prefill_tile_tokens - 1) /
                 kn::prefill_tile_tokens;
  }
  THAW_TRY(ensure_capacity(l));

  // Metadata, staged in pinned memory and sent in one copy.
  auto* m = staging_.as<int32_t>();
  std::fill_n(m, l.ints(), 0);
  int32_t* tokens = m;
  int32_t* pos = m + l.pos();
  int32_t* slots = m + l.slots();
  int32_t* rows = m + l.rows();
  int32_t* tables = m + l.tables();
  auto* tiles = reinterpret_cast<kn::attention_tile*>(m + l.tile_at());
  {
    int64_t t = 0, want = 0, tile = 0;
    for (int64_t s = 0; s < S; ++s) {
      const auto& it = batch[static_cast<std::size_t>(s)];
      const auto n = static_cast<int64_t>(it.tokens.size());
      const auto used = std::min<int64_t>(static_cast<int64_t>(it.block_table.size()), l.MB);
      std::copy_n(it.block_table.begin(), used, tables + s * l.MB);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = it.start_pos + i;
        tokens[t + i] = it.tokens[static_cast<std::size_t>(i)];
        pos[t + i] = static_cast<int32_t>(p);
        slots[t + i] = static_cast<int32_t>(
            it.block_table[static_cast<std::size_t>(p / kv_block_tokens)] * kv_block_tokens +
            p % kv_block_tokens);
      }
      if (!l.decode)
        for (int64_t i = 0; i < n; i += kn::prefill_tile_tokens)
          tiles[tile++] = {static_cast<int32_t>(t + i),
                           static_cast<int32_t>(std::min<int64_t>(kn::prefill_tile_tokens, n - i)),
                           static_cast<int32_t>(s)};
      if (l.decode)
        rows[s] = static_cast<int32_t>(s);
      else if (it.want_logits)
        rows[want++] = static_cast<int32_t>(t + n - 1);
      t += n;
    }
    for (int64_t s = S; l.decode && s < l.S; ++s) { // padding rows
      pos[s] = -1;
      slots[s] = -1;
      rows[s] = static_cast<int32_t>(s);
    }
  }
  THAW_CUDA_CHECK(cudaMemcpyAsync(meta_.get(), m, static_cast<std::size_t>(l.ints()) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream_));
  THAW_TRY(run_step(l));
  return l;
}

status cuda_model_runner::copy_logits(std::span<const forward_item> batch, const step_layout& l,
                                      std::span<float> logits) {
  const auto S = static_cast<int64_t>(batch.size());
  const auto V = static_cast<int64_t>(cfg_.vocab_size);
  // A padded decode computes a row per padding item too; only the batch's own rows (the
  // first S) come back.
  const int64_t back = l.decode ? std::min<int64_t>(S, l.W) : l.W;
  if (back > 0)
    THAW_CUDA_CHECK(cudaMemcpyAsync(logits_host_.as<float>(), logits_.get(),
                                    static_cast<std::size_t>(back * V) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream_));
  THAW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  THAW_CUDA_CHECK(cudaGetLastError());
  // Logits rows in batch order of the items that want them.
  int64_t out = 0;
  for (int64_t s = 0; s < S; ++s) {
    const auto& it = batch[static_cast<std::size_t>(s)];
    if (!it.want_logits)
      continue;
    const int64_t src = l.decode ? s : out;
    std::memcpy(logits.data() + out * V, logits_host_.as<float>() + src * V,
                static_cast<std::size_t>(V) * sizeof(float));
    ++out;
  }
  return {};
}

status cuda_model_runner::sample_rows(std::span<const forward_item> batch, const step_layout& l,
                                      std::span<const sampling_params> params,
                                      std::span<const rng_state> rngs,
                                      std::span<expected<sample_result>> out) {
  // Logits row r of the step is: item r in a (padded) decode, else the r-th item that wants
  // logits. Rows nobody samples (items without want_logits in a decode) draw greedily.
  const auto S = static_cast<int64_t>(batch.size());
  const int64_t n_rows = l.decode ? S : l.W;
  auto* req = sample_staging_.as<kn::sample_request>();
  std::vector<int64_t> row_of(params.size(), -1);
  {
    std::size_t k = 0;
    for (int64_t s = 0; s < S; ++s) {
      if (!batch[static_cast<std::size_t>(s)].want_logits) {
        if (l.decode)
          req[s] = kn::sample_request{.temperature = 0.0f};
        continue;
      }
      const int64_t r = l.decode ? s : static_cast<int64_t>(k);
      row_of[k] = r;
      const auto& p = params[k];
      req[r] = kn::sample_request{.temperature = 0.0f};
      if (auto ok = p.validate(); !ok) {
        out[k] = std::move(ok).err(); // as thaw::sample would refuse them
        row_of[k] = -1;
      } else {
        req[r] = {p.temperature, p.top_k, p.top_p,          p.min_p,
                  rngs[k].seed,  rngs[k].counter, p.logprobs >= 0 ? 1 : 0};
      }
      ++k;
    }
  }
  if (n_rows == 0) { // nothing to sample: the step itself must still end
    THAW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return {};
  }
  const auto in_bytes = static_cast<std::size_t>(n_rows) * sizeof(kn::sample_request);
  const auto out_bytes = static_cast<std::size_t>(n_rows) * sizeof(kn::sample_output);
  THAW_CUDA_CHECK(cudaMemcpyAsync(sample_in_.get(), req, in_bytes, cudaMemcpyHostToDevice, stream_));
  THAW_CUDA_CHECK(kn::sample(logits_.as<const float>(), n_rows,
                             static_cast<int64_t>(cfg_.vocab_size),
                             sample_in_.as<const kn::sample_request>(),
                             sample_out_.as<kn::sample_output>(), stream_));
  THAW_CUDA_CHECK(cudaMemcpyAsync(sample_back_.as<void>(), sample_out_.get(), out_bytes,
                                  cudaMemcpyDeviceToHost, stream_));
  THAW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  THAW_CUDA_CHECK(cudaGetLastError());
  const auto* got = sample_back_.as<const kn::sample_output>();
  for (std::size_t k = 0; k < params.size(); ++k) {
    if (row_of[k] < 0)
      continue;
    const auto& g = got[row_of[k]];
    switch (g.status) {
      case kn::sample_status::nan_logit:
        out[k] = make_error(errc::invalid_argument,
                            "logits: NaN at token " + std::to_string(g.nan_index));
        break;
      case kn::sample_status::all_neg_inf:
        out[k] = make_error(errc::invalid_argument, "logits: every logit is -inf");
        break;
      case kn::sample_status::ok: {
        sample_result r;
        r.token = g.token;
        r.logprob = params[k].logprobs >= 0 ? g.logprob : 0.0f;
        out[k] = std::move(r);
        break;
      }
    }
  }
  return {};
}

} // namespace

expected<std::unique_ptr<model_runner>>
make_cuda_model_runner(const checkpoint& ckpt, const weight_files& weights, cuda::cuda_device& dev,
                       const cuda_runner_options& opt) {
  auto r = std::make_unique<cuda_model_runner>(ckpt.config(), dev, opt);
  THAW_TRY(r->init(ckpt, weights));
  return std::unique_ptr<model_runner>(std::move(r));
}

expected<loaded_model> load_cuda_model(const std::filesystem::path& dir,
                                       const cuda_runner_options& opt, int ordinal) {
  loaded_model m;
  THAW_ASSIGN(auto ck, checkpoint::open(dir));
  m.ckpt = std::make_unique<checkpoint>(std::move(ck));
  THAW_ASSIGN(auto dev, cuda::make_cuda_device({.ordinal = ordinal}));
  auto& gpu = *dev;
  m.dev = std::move(dev);
  THAW_ASSIGN(m.ld, loader::create(loader_options{}, gpu));
  THAW_ASSIGN(auto handle, m.ld->load(*m.ckpt));
  cuda_runner_options ro = opt;
  // The runner waits for each layer as its first forward reaches it; the handle it holds keeps
  // the load (and its buffer) alive as long as the runner.
  ro.layer_ready = [handle, outer = opt.layer_ready](std::int32_t layer) -> status {
    THAW_TRY(handle.wait_for_layer(layer));
    return outer ? outer(layer) : status{};
  };
  THAW_ASSIGN(m.runner, make_cuda_model_runner(*m.ckpt, weights_in(*m.ckpt, handle.buffer()), gpu, ro));
  return m;
}

} // namespace thaw
