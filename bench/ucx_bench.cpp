#include "bench/ucx_bench.hpp"

#include "bench/timing.hpp"
#include "bench/ucx_raw_get.hpp"
#include "gpu/host/host_device.hpp"
#include "runtime/loader/remote_tier.hpp"
#include "runtime/common/units.hpp"
#include "transport/data_plane.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

namespace thaw::bench {
namespace {

constexpr const char* entry_key = "bench";                 // in UCX-allocated memory
constexpr const char* registered_key = "bench-registered"; // in malloc'd, registered memory
constexpr const char* model_key = "bench-model";           // a checkpoint in a DRAM tier

/// A loader on the host whose pool `plane` allocates (as a node's is), big enough for `ckpt`.
expected<std::unique_ptr<loader>> tier_loader(const ucx_bench_options& o, device& dev,
                                              transport::data_plane& plane,
                                              const checkpoint& ckpt) {
  loader_options lo;
  lo.chunk_bytes = o.pool_chunk_bytes;
  lo.pool_bytes = (ckpt.total_bytes() / o.pool_chunk_bytes + 2) * o.pool_chunk_bytes;
  return loader::create(lo, dev, [&plane](std::uint64_t n) { return plane.allocate_memory(n); });
}

/// The server's side of the remote tier: the checkpoint read into a DRAM tier and published
/// for a puller with the same pool chunks. Holds it until destroyed.
struct lent_model {
  host_device dev;
  std::unique_ptr<loader> ld;
  dram_tier::lease pin;
};

expected<std::unique_ptr<lent_model>> lend(const ucx_bench_options& o,
                                           transport::data_plane& plane) {
  auto m = std::make_unique<lent_model>();
  THAW_ASSIGN(auto ckpt, checkpoint::open(o.checkpoint));
  THAW_ASSIGN(m->ld, tier_loader(o, m->dev, plane, ckpt));
  THAW_ASSIGN(auto h, m->ld->load(ckpt, load_mode::tier_only));
  THAW_TRY(h.wait());
  auto pin = m->ld->tier().try_pin_ready(ckpt, 0);
  if (!pin)
    return make_error(errc::internal, "bench ucx: the model is not ready in the server's tier");
  m->pin = std::move(*pin);
  THAW_TRY(publish_for_pull(plane, model_key, m->pin.model(), m->ld->pool(), o.pool_chunk_bytes));
  return m;
}

// Cheap, position-dependent bytes, so a misplaced piece fails the check.
std::byte pattern(std::size_t i) { return static_cast<std::byte>((i >> 12) * 31 + (i & 0xff)); }

status write_full(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return make_error(errc::io_error,
                        std::string{"bench ucx: pipe write: "} + std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return {};
}

status read_full(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return make_error(errc::io_error, "bench ucx: the server process went away");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return {};
}

void fill(std::span<std::byte> region) {
  for (std::size_t i = 0; i < region.size(); ++i)
    region[i] = pattern(i);
}

std::vector<std::span<std::byte>> cut(std::span<std::byte> region, std::size_t segment) {
  std::vector<std::span<std::byte>> out;
  for (std::size_t off = 0; off < region.size(); off += segment)
    out.emplace_back(region.data() + off, std::min(segment, region.size() - off));
  return out;
}

// The server process: publish, map for raw gets, report, serve until the parent says stop.
expected<std::unique_ptr<transport::data_plane>> serve(const ucx_bench_options& o,
                                                       std::vector<std::byte>& region, int out_fd,
                                                       int in_fd) {
  THAW_ASSIGN(auto plane, transport::data_plane::start({}));
  THAW_ASSIGN(auto pool, plane->allocate_memory(o.bytes));
  fill(pool);
  const auto segments = cut(pool, o.segment_bytes);
  THAW_TRY(plane->publish(entry_key, {segments.begin(), segments.end()}));
  if (o.registered) {
    fill(region);
    THAW_TRY(plane->register_memory(region));
    const auto reg_segments = cut(region, o.segment_bytes);
    THAW_TRY(plane->publish(registered_key, {reg_segments.begin(), reg_segments.end()}));
  }
  std::unique_ptr<lent_model> lent;
  if (!o.checkpoint.empty()) {
    THAW_ASSIGN(lent, lend(o, *plane));
  }
  THAW_ASSIGN(auto raw, raw_get_target::start(o.bytes));
  fill(raw->region());
  const auto blob = raw->connection_blob();
  const std::uint8_t ok = 1;
  const std::uint16_t port = plane->port();
  const std::uint64_t blob_size = blob.size();
  THAW_TRY(write_full(out_fd, &ok, 1));
  THAW_TRY(write_full(out_fd, &port, sizeof port));
  THAW_TRY(write_full(out_fd, &blob_size, sizeof blob_size));
  THAW_TRY(write_full(out_fd, blob.data(), blob.size()));
  THAW_TRY(raw->serve_until_readable(in_fd));
  plane->unpublish(model_key);
  lent.reset(); // its pool is the plane's memory
  return plane;
}

[[noreturn]] void server_main(const ucx_bench_options& o, int out_fd, int in_fd) {
  std::vector<std::byte> region(o.registered ? o.bytes : 0);
  auto served = serve(o, region, out_fd, in_fd);
  if (!served) {
    const std::uint8_t failed = 0;
    const std::string msg = served.err().to_string();
    const std::uint64_t n = msg.size();
    (void)write_full(out_fd, &failed, 1);
    (void)write_full(out_fd, &n, sizeof n);
    (void)write_full(out_fd, msg.data(), msg.size());
    std::_Exit(1);
  }
  served->reset();
  std::_Exit(0);
}

// The client side, once the server is up.
expected<nlohmann::json> measure(const ucx_bench_options& o, std::uint16_t port,
                                 std::span<const std::byte> blob) {
  auto say = [&](const std::string& line) {
    if (o.log)
      o.log(line);
  };
  transport::data_plane_options dpo;
  dpo.piece_bytes = o.piece_bytes;
  dpo.pieces_in_flight = o.pieces_in_flight;
  THAW_ASSIGN(auto plane, transport::data_plane::start(dpo));
  THAW_ASSIGN(std::span<std::byte> dst, plane->allocate_memory(o.bytes));
  std::memset(dst.data(), 0, dst.size()); // touch every page before timing anything
  THAW_ASSIGN(auto raw, raw_get_reader::connect(blob, dst));
  const auto segments = cut(dst, o.segment_bytes);
  THAW_ASSIGN(auto info, plane->describe("127.0.0.1", port, entry_key));
  if (info.total_bytes() != o.bytes || info.segment_sizes.size() != segments.size())
    return make_error(errc::internal, "bench ucx: the served entry has an unexpected shape");

  auto check = [&](const char* what) -> status {
    for (std::size_t i = 0; i < dst.size(); ++i)
      if (dst[i] != pattern(i))
        return make_error(errc::corrupt, std::string{"bench ucx: "} + what + ": byte " +
                                             std::to_string(i) + " differs");
    return {};
  };

  // The remote tier: the parent pulls the checkpoint, known by its manifest alone.
  host_device dev;
  std::unique_ptr<loader> puller;
  std::optional<checkpoint> model;
  if (!o.checkpoint.empty()) {
    THAW_ASSIGN(auto local, checkpoint::open(o.checkpoint));
    THAW_ASSIGN(auto remote, checkpoint::from_manifest(o.checkpoint + " (remote)",
                                                       local.manifest_bytes()));
    model = std::move(remote);
    THAW_ASSIGN(puller, tier_loader(o, dev, *plane, *model));
  }
  data_plane_source source{*plane, remote_location{"bench-server", "127.0.0.1", port, model_key,
                                                   o.pool_chunk_bytes}};

  std::vector<double> raw_s, plane_s, registered_s, memcpy_s, pull_s;
  std::vector<std::byte> scratch(o.bytes);
  std::memset(scratch.data(), 1, scratch.size());
  for (int r = 0; r < o.rounds; ++r) {
    std::memset(dst.data(), 0, dst.size());
    THAW_ASSIGN(double raw_secs, raw->read_all(o.raw_piece_bytes));
    raw_s.push_back(raw_secs);
    if (r == 0)
      THAW_TRY(check("raw ucp_get"));

    std::memset(dst.data(), 0, dst.size());
    const auto start = clock::now();
    THAW_TRY(plane->fetch("127.0.0.1", port, entry_key, segments));
    plane_s.push_back(since(start));
    THAW_TRY(check("data_plane::fetch"));

    if (o.registered) {
      std::memset(dst.data(), 0, dst.size());
      const auto rstart = clock::now();
      THAW_TRY(plane->fetch("127.0.0.1", port, registered_key, segments));
      registered_s.push_back(since(rstart));
      THAW_TRY(check("data_plane::fetch of registered memory"));
    }

    std::string pulled;
    if (puller) {
      (void)puller->tier().evict_unpinned();
      const auto pstart = clock::now();
      THAW_ASSIGN(auto lease, puller->pull(*model, source));
      pull_s.push_back(since(pstart));
      pulled = ", remote tier " + format_rate(model->total_bytes() / pull_s.back());
    }

    const auto mstart = clock::now();
    std::memcpy(scratch.data(), dst.data(), dst.size());
    memcpy_s.push_back(since(mstart));
    say("round " + std::to_string(r + 1) + ": raw " + format_rate(o.bytes / raw_secs) +
        ", data plane " + format_rate(o.bytes / plane_s.back()) + pulled);
  }
  puller.reset(); // its pool is the plane's memory
  plane->stop();

  const double gb = static_cast<double>(o.bytes) / 1e9;
  const double raw_gbps = gb / median(raw_s);
  const double plane_gbps = gb / median(plane_s);
  const char* tls = std::getenv("UCX_TLS");
  nlohmann::json out;
  out["bytes"] = o.bytes;
  out["segment_bytes"] = o.segment_bytes;
  out["segments"] = segments.size();
  out["piece_bytes"] = o.piece_bytes;
  out["pieces_in_flight"] = o.pieces_in_flight;
  out["raw_piece_bytes"] = o.raw_piece_bytes;
  out["rounds"] = o.rounds;
  out["ucx_tls"] = tls != nullptr ? tls : "(UCX default)";
  out["gbps"] = {{"raw_ucp_get", raw_gbps},
                 {"data_plane_fetch", plane_gbps},
                 {"memcpy_1t", gb / median(memcpy_s)}};
  out["ratios"] = {{"data_plane_vs_raw_ucp_get", plane_gbps / raw_gbps}};
  out["seconds"] = {{"raw_ucp_get", raw_s}, {"data_plane_fetch", plane_s}};
  if (o.registered) {
    out["gbps"]["data_plane_fetch_registered"] = gb / median(registered_s);
    out["ratios"]["data_plane_registered_vs_raw_ucp_get"] = gb / median(registered_s) / raw_gbps;
    out["seconds"]["data_plane_fetch_registered"] = registered_s;
  }
  if (model) {
    const double pull_gbps = static_cast<double>(model->total_bytes()) / 1e9 / median(pull_s);
    out["checkpoint"] = o.checkpoint;
    out["checkpoint_bytes"] = model->total_bytes();
    out["pool_chunk_bytes"] = o.pool_chunk_bytes;
    out["gbps"]["remote_tier_pull"] = pull_gbps;
    out["ratios"]["remote_tier_pull_vs_raw_ucp_get"] = pull_gbps / raw_gbps;
    // Round by round, each pull against the raw gets of the same round.
    std::vector<double> paired;
    for (std::size_t i = 0; i < pull_s.size(); ++i)
      paired.push_back(static_cast<double>(model->total_bytes()) / pull_s[i] /
                       (static_cast<double>(o.bytes) / raw_s[i]));
    out["ratios"]["remote_tier_pull_vs_raw_ucp_get_paired"] = median(paired);
    out["seconds"]["remote_tier_pull"] = pull_s;
    // The first round alone: the first read of a peer's memory also maps it page by page
    // (UCX attaches the peer's shared memory), which later rounds find done. A node's first
    // pull from a peer is such a round.
    out["first_round_gbps"] = {{"raw_ucp_get", gb / raw_s.front()},
                               {"remote_tier_pull", static_cast<double>(model->total_bytes()) /
                                                        1e9 / pull_s.front()}};
  }
  return out;
}

} // namespace

expected<nlohmann::json> run_ucx_bench(const ucx_bench_options& o) {
  if (o.bytes == 0 || o.segment_bytes == 0 || o.piece_bytes == 0 || o.raw_piece_bytes == 0 ||
      o.pieces_in_flight == 0 || o.rounds < 1)
    return make_error(errc::invalid_argument,
                      "bench ucx: sizes, in-flight and rounds must be positive");
  int to_parent[2], to_child[2];
  if (::pipe(to_parent) != 0 || ::pipe(to_child) != 0)
    return make_error(errc::io_error, std::string{"bench ucx: pipe: "} + std::strerror(errno));
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0)
    return make_error(errc::io_error, std::string{"bench ucx: fork: "} + std::strerror(errno));
  if (child == 0) {
    ::close(to_parent[0]);
    ::close(to_child[1]);
    server_main(o, to_parent[1], to_child[0]);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);

  auto run = [&]() -> expected<nlohmann::json> {
    std::uint8_t ok = 0;
    THAW_TRY(read_full(to_parent[0], &ok, 1));
    if (ok == 0) {
      std::uint64_t n = 0;
      THAW_TRY(read_full(to_parent[0], &n, sizeof n));
      std::string msg(n, '\0');
      THAW_TRY(read_full(to_parent[0], msg.data(), n));
      return make_error(errc::io_error, "bench ucx: server process: " + msg);
    }
    std::uint16_t port = 0;
    std::uint64_t blob_size = 0;
    THAW_TRY(read_full(to_parent[0], &port, sizeof port));
    THAW_TRY(read_full(to_parent[0], &blob_size, sizeof blob_size));
    std::vector<std::byte> blob(blob_size);
    THAW_TRY(read_full(to_parent[0], blob.data(), blob.size()));
    return measure(o, port, blob);
  };
  auto result = run();
  // The server may have exited already (it failed): the goodbye must not kill this process
  // with SIGPIPE before it reports why.
  struct sigaction ignore {}, previous {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &previous);
  const char bye = 0;
  (void)write_full(to_child[1], &bye, 1);
  ::sigaction(SIGPIPE, &previous, nullptr);
  ::close(to_child[1]);
  ::close(to_parent[0]);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  return result;
}

std::string format_ucx_bench(const nlohmann::json& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line,
                "thaw bench ucx: %s in %zu segments, 2 processes, %d rounds (medians), "
                "UCX_TLS %s\n",
                format_bytes(r["bytes"].get<std::uint64_t>()).c_str(),
                r["segments"].get<std::size_t>(), r["rounds"].get<int>(),
                r["ucx_tls"].get<std::string>().c_str());
  s += line;
  const auto& g = r["gbps"];
  std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s\n", "raw ucp_get_nbx (UCX limit)",
                g["raw_ucp_get"].get<double>());
  s += line;
  std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s  %5.2fx of raw\n", "data_plane::fetch",
                g["data_plane_fetch"].get<double>(),
                r["ratios"]["data_plane_vs_raw_ucp_get"].get<double>());
  s += line;
  if (g.contains("data_plane_fetch_registered")) {
    std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s  %5.2fx of raw\n",
                  "data_plane::fetch, registered mem",
                  g["data_plane_fetch_registered"].get<double>(),
                  r["ratios"]["data_plane_registered_vs_raw_ucp_get"].get<double>());
    s += line;
  }
  if (g.contains("remote_tier_pull")) {
    std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s  %5.2fx of raw (%.2fx paired)\n",
                  "remote tier: loader::pull, verified", g["remote_tier_pull"].get<double>(),
                  r["ratios"]["remote_tier_pull_vs_raw_ucp_get"].get<double>(),
                  r["ratios"]["remote_tier_pull_vs_raw_ucp_get_paired"].get<double>());
    s += line;
    const auto& f = r["first_round_gbps"];
    std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s  raw %.2f GB/s (%.2fx)\n",
                  "  first round (peer memory mapped)", f["remote_tier_pull"].get<double>(),
                  f["raw_ucp_get"].get<double>(),
                  f["remote_tier_pull"].get<double>() / f["raw_ucp_get"].get<double>());
    s += line;
  }
  std::snprintf(line, sizeof line, "  %-34s %7.2f GB/s\n", "memcpy, 1 thread",
                g["memcpy_1t"].get<double>());
  s += line;
  return s;
}

} // namespace thaw::bench
