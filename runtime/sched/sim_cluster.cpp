#include "runtime/sched/sim_cluster.hpp"

#include <algorithm>
#include <random>

namespace thaw::sched {

sim_cluster::sim_cluster(const sim_config& cfg, const std::vector<sim_request>& requests)
    : cfg_(cfg), req_(requests),
      est_{startup_estimator{cfg.estimator_bandwidth, cfg.setup_seconds},
           migration_estimator{cfg.migration_prior_a, cfg.migration_prior_b}},
      placer_(cfg.policy, cfg.seed) {
  out_.policy = cfg.policy;
  out_.requests = requests.size();
  std::mt19937_64 rng{cfg.seed ^ 0x5eedULL};
  std::uniform_real_distribution<double> jitter{1.0 - cfg.bandwidth_jitter,
                                                1.0 + cfg.bandwidth_jitter};
  nodes_.resize(cfg.nodes);
  view_.nodes.resize(cfg.nodes);
  for (std::uint32_t n = 0; n < cfg.nodes; ++n) {
    auto& node = nodes_[n];
    for (auto& f : node.factor)
      f = std::max(0.05, jitter(rng));
    node.dram = lru_tier{cfg.dram_bytes};
    node.ssd = lru_tier{cfg.ssd_bytes};
    auto& v = view_.nodes[n];
    v.name = "node" + std::to_string(n);
    v.slots = cfg.slots_per_node;
    for (std::int32_t s = 0; s < cfg.slots_per_node; ++s)
      v.free_slots.push_back(s);
  }
  // Each model's checkpoint starts on the SSDs of `ssd_replicas` nodes spread by a hash, as a
  // checkpoint store would place them; nothing is in DRAM yet.
  const auto replicas = std::min<std::uint32_t>(
      static_cast<std::uint32_t>(std::max(cfg.ssd_replicas, 0)), cfg.nodes);
  for (std::uint32_t m = 0; m < cfg.models.size(); ++m) {
    for (std::uint32_t r = 0; r < replicas; ++r) {
      const auto n = static_cast<std::uint32_t>(
          (static_cast<std::uint64_t>(m) * 2654435761ULL + r * (cfg.nodes / replicas + 1)) %
          cfg.nodes);
      nodes_[n].ssd.touch(m, cfg.models[m].bytes, true);
      if (nodes_[n].ssd.contains(m)) // a full SSD keeps no more homes
        view_.set_tier(n, m, tier::ssd);
    }
  }
  models_.resize(cfg.models.size());
  rs_.resize(requests.size());
  out_.ttft.assign(requests.size(), 0.0);
  out_.e2e.assign(requests.size(), 0.0);
  inst_.emplace_back(); // id 0: none
}

void sim_cluster::push(double t, ev kind, std::uint64_t a, std::uint64_t b) {
  events_.push(event{t, order_++, kind, a, b});
}

void sim_cluster::advance(double t) {
  const double dt = t - last_;
  if (dt > 0) {
    out_.occupied_slot_seconds += static_cast<double>(occupied_) * dt;
    out_.busy_slot_seconds += static_cast<double>(busy_) * dt;
    last_ = t;
  }
  now_ = t;
}

sim_result sim_cluster::run() {
  // Models kept warm by configuration start at time 0.
  for (std::uint32_t m = 0; m < models_.size(); ++m)
    if (cfg_.models[m].min_instances > 0 && !scale(m) && !models_[m].waiting_for_slot) {
      models_[m].waiting_for_slot = true;
      waiting_.push_back(m);
    }
  std::size_t next = 0;
  while (out_.completed < out_.requests) {
    const bool have_event = !events_.empty();
    if (next < req_.size() && (!have_event || req_[next].arrival <= events_.top().t)) {
      advance(req_[next].arrival);
      ++out_.events;
      on_arrival(static_cast<std::uint32_t>(next++));
      continue;
    }
    if (!have_event)
      break; // nothing can happen any more (cannot occur with at least one slot)
    const event e = events_.top();
    events_.pop();
    advance(e.t);
    ++out_.events;
    switch (e.kind) {
    case ev::load_done:
      on_load_done(e.a);
      break;
    case ev::seq_done:
      on_seq_done(static_cast<std::uint32_t>(e.a), e.b);
      break;
    case ev::keep_alive:
      on_keep_alive(e.a, e.b);
      break;
    case ev::move_loaded:
      on_move_loaded(static_cast<std::size_t>(e.a));
      break;
    case ev::move_done:
      on_move_done(static_cast<std::size_t>(e.a));
      break;
    }
  }
  out_.simulated_seconds = now_;
  out_.slot_seconds = now_ * static_cast<double>(cfg_.nodes) * cfg_.slots_per_node;
  out_.learned_migration_a = est_.migration.a();
  out_.learned_migration_b = est_.migration.b();
  return std::move(out_);
}

// --- requests ---------------------------------------------------------------------------------

void sim_cluster::on_arrival(std::uint32_t r) {
  const auto m = req_[r].model;
  models_[m].queue.push_back(r);
  dispatch(m);
}

void sim_cluster::dispatch(std::uint32_t model) {
  auto& ms = models_[model];
  const auto conc = static_cast<std::size_t>(cfg_.models[model].concurrency);
  while (!ms.queue.empty()) {
    // The running instance with the most sequences that still has room: packing keeps other
    // instances idle, so keep-alive can stop them.
    std::uint64_t best = 0;
    std::size_t best_n = 0;
    for (auto id : ms.instances) {
      const auto& in = inst_[id];
      if (in.st == state::running && in.seqs.size() < conc && (best == 0 || in.seqs.size() > best_n)) {
        best = id;
        best_n = in.seqs.size();
      }
    }
    if (best == 0)
      break;
    start_seq(best, ms.queue.front());
    ms.queue.pop_front();
  }
  if (!ms.queue.empty() && !scale(model) && !ms.waiting_for_slot) {
    ms.waiting_for_slot = true;
    waiting_.push_back(model);
  }
}

void sim_cluster::start_seq(std::uint64_t id, std::uint32_t r) {
  auto& in = inst_[id];
  const auto& mc = cfg_.models[in.model];
  auto& s = rs_[r];
  s.start = now_;
  s.first = now_ + req_[r].input_tokens / mc.prefill_tps;
  s.done = s.first + req_[r].output_tokens / mc.decode_tps;
  s.inst = id;
  const auto before = in.seqs.size();
  in.seqs.push_back(r);
  sequences_changed(id, before);
  push(s.done, ev::seq_done, r, s.gen);
}

void sim_cluster::sequences_changed(std::uint64_t id, std::size_t before) {
  auto& in = inst_[id];
  const auto after = in.seqs.size();
  busy_ += static_cast<int>(after > 0) - static_cast<int>(before > 0);
  if (auto* v = view_of(id)) {
    v->sequences = static_cast<std::int32_t>(after);
    view_.nodes[in.node].load += static_cast<std::int32_t>(after) - static_cast<std::int32_t>(before);
  }
}

void sim_cluster::on_seq_done(std::uint32_t r, std::uint64_t gen) {
  auto& s = rs_[r];
  if (gen != s.gen)
    return; // rescheduled by a migration's pause
  auto& in = inst_[s.inst];
  const auto before = in.seqs.size();
  in.seqs.erase(std::find(in.seqs.begin(), in.seqs.end(), r));
  sequences_changed(s.inst, before);
  out_.ttft[r] = s.first - req_[r].arrival;
  out_.e2e[r] = s.done - req_[r].arrival;
  ++out_.completed;
  const auto model = in.model;
  const auto id = s.inst;
  dispatch(model);
  if (inst_[id].st == state::running && inst_[id].seqs.empty())
    went_idle(id);
}

void sim_cluster::went_idle(std::uint64_t id) {
  auto& in = inst_[id];
  ++in.idle_gen;
  push(now_ + cfg_.models[in.model].keep_alive, ev::keep_alive, id, in.idle_gen);
  // An idle instance's slot can be taken by a model that is waiting for one.
  on_slot_available();
}

void sim_cluster::on_keep_alive(std::uint64_t id, std::uint64_t gen) {
  auto& in = inst_[id];
  if (in.st != state::running || !in.seqs.empty() || in.idle_gen != gen)
    return;
  if (static_cast<std::int32_t>(models_[in.model].instances.size()) <=
      cfg_.models[in.model].min_instances)
    return;
  stop(id);
  ++out_.scale_to_zero;
  on_slot_available();
}

// --- placement --------------------------------------------------------------------------------

bool sim_cluster::scale(std::uint32_t model) {
  auto& ms = models_[model];
  const auto& mc = cfg_.models[model];
  auto wanted = [&] {
    const auto live = static_cast<std::int32_t>(ms.instances.size());
    if (live < mc.min_instances)
      return true;
    return live < mc.max_instances &&
           ms.queue.size() > static_cast<std::size_t>(ms.starting) * mc.concurrency;
  };
  while (wanted()) {
    refresh_view();
    const auto d = placer_.place(view_, {model, mc.bytes}, est_);
    if (!d.placed)
      return false;
    execute(d, model);
  }
  return true;
}

void sim_cluster::refresh_view() {
  for (std::uint32_t n = 0; n < view_.nodes.size(); ++n)
    view_.nodes[n].loader_wait = std::max(0.0, nodes_[n].loader_free_at - now_);
  if (cfg_.policy != policy_kind::locality_migrate)
    return;
  for (auto& node : view_.nodes)
    for (auto& v : node.instances) {
      std::int64_t t = 0;
      for (auto r : inst_[v.id].seqs)
        t += tokens_now(r);
      v.tokens = t;
    }
}

std::int64_t sim_cluster::tokens_now(std::uint32_t r) const {
  const auto& s = rs_[r];
  const auto& mc = cfg_.models[req_[r].model];
  const double generated = std::clamp((now_ - s.first) * mc.decode_tps, 0.0,
                                      static_cast<double>(req_[r].output_tokens));
  return req_[r].input_tokens + static_cast<std::int64_t>(generated);
}

void sim_cluster::execute(const decision& d, std::uint32_t model) {
  for (auto id : d.evictions) {
    stop(id);
    ++out_.evictions;
  }
  auto& ms = models_[model];
  ++ms.starting;
  if (d.migrations.empty()) {
    const auto id = new_instance(model, d.node, d.slot, state::loading, d.source);
    occupy(id);
    ++out_.cold_starts[static_cast<std::size_t>(d.source)];
    push(begin_load(id), ev::load_done, id);
    ms.instances.push_back(id);
    return;
  }
  const auto& mv = d.migrations.front();
  auto& src = inst_[mv.instance];
  move_state m;
  m.source = mv.instance;
  m.dest = new_instance(src.model, mv.to, mv.to_slot, state::moving_dest, mv.source);
  m.waiting = new_instance(model, d.node, d.slot, state::waiting_slot, d.source);
  moves_.push_back(m);
  const auto idx = moves_.size();
  src.st = state::moving_source;
  src.move = idx;
  inst_[m.dest].move = idx;
  inst_[m.waiting].move = idx;
  if (auto* v = view_of(m.source))
    v->movable = false;
  occupy(m.dest);
  ms.instances.push_back(m.waiting);
  push(begin_load(m.dest), ev::move_loaded, idx - 1);
}

std::uint64_t sim_cluster::new_instance(std::uint32_t model, std::uint32_t node,
                                        std::int32_t slot, state st, tier source) {
  instance in;
  in.model = model;
  in.node = node;
  in.slot = slot;
  in.st = st;
  in.source = source;
  inst_.push_back(std::move(in));
  return inst_.size() - 1;
}

void sim_cluster::occupy(std::uint64_t id) {
  const auto& in = inst_[id];
  auto& node = view_.nodes[in.node];
  auto it = std::find(node.free_slots.begin(), node.free_slots.end(), in.slot);
  if (it != node.free_slots.end())
    node.free_slots.erase(it);
  instance_view v;
  v.id = id;
  v.model = in.model;
  v.slot = in.slot;
  v.bytes = cfg_.models[in.model].bytes;
  v.movable = false; // until it is running
  node.instances.push_back(v);
  ++occupied_;
}

void sim_cluster::vacate(std::uint64_t id) {
  const auto& in = inst_[id];
  auto& node = view_.nodes[in.node];
  auto it = std::find_if(node.instances.begin(), node.instances.end(),
                         [&](const instance_view& v) { return v.id == id; });
  if (it == node.instances.end())
    return;
  node.instances.erase(it);
  node.free_slots.push_back(in.slot);
  --occupied_;
}

instance_view* sim_cluster::view_of(std::uint64_t id) {
  auto& node = view_.nodes[inst_[id].node];
  for (auto& v : node.instances)
    if (v.id == id)
      return &v;
  return nullptr;
}

void sim_cluster::stop(std::uint64_t id) {
  auto& in = inst_[id];
  vacate(id);
  in.st = state::stopped;
  auto& list = models_[in.model].instances;
  list.erase(std::remove(list.begin(), list.end(), id), list.end());
}

void sim_cluster::on_slot_available() {
  while (!waiting_.empty()) {
    const auto m = waiting_.front();
    waiting_.pop_front();
    models_[m].waiting_for_slot = false;
    if (models_[m].queue.empty() &&
        static_cast<std::int32_t>(models_[m].instances.size()) >= cfg_.models[m].min_instances)
      continue;
    if (!scale(m)) {
      models_[m].waiting_for_slot = true;
      waiting_.push_front(m);
      return;
    }
  }
}

// --- loading ----------------------------------------------------------------------------------

double sim_cluster::begin_load(std::uint64_t id) {
  auto& in = inst_[id];
  const auto node = in.node;
  const auto model = in.model;
  const auto source = in.source;
  auto& n = nodes_[node];
  const double bytes = cfg_.models[model].bytes;
  const double seconds =
      cfg_.setup_seconds +
      bytes / (cfg_.bandwidth.of(source) * n.factor[static_cast<std::size_t>(source)]);
  const double start = std::max(now_, n.loader_free_at);
  n.loader_free_at = start + seconds;
  in.load_seconds = seconds; // reported to the estimator when the load completes
  return n.loader_free_at;
}

void sim_cluster::loaded(std::uint64_t id) {
  const auto& in = inst_[id];
  const auto node = in.node;
  const auto model = in.model;
  est_.startup.observe_load(node, in.source, cfg_.models[model].bytes, in.load_seconds);
  auto& n = nodes_[node];
  const double bytes = cfg_.models[model].bytes;
  // Loads pass through the DRAM tier and stay there (LRU); a copy lands on the SSD too.
  for (auto e : n.ssd.touch(model, bytes))
    if (!n.dram.contains(e))
      view_.set_tier(node, e, tier::remote);
  for (auto e : n.dram.touch(model, bytes))
    view_.set_tier(node, e, n.ssd.contains(e) ? tier::ssd : tier::remote);
  view_.set_tier(node, model,
                 n.dram.contains(model) ? tier::dram
                                        : (n.ssd.contains(model) ? tier::ssd : tier::remote));
}

void sim_cluster::on_load_done(std::uint64_t id) {
  loaded(id);
  auto& in = inst_[id];
  in.st = state::running;
  if (auto* v = view_of(id))
    v->movable = true;
  --models_[in.model].starting;
  const auto model = in.model;
  dispatch(model);
  if (inst_[id].st == state::running && inst_[id].seqs.empty())
    went_idle(id);
}

// --- migration --------------------------------------------------------------------------------

void sim_cluster::on_move_loaded(std::size_t m) {
  auto& mv = moves_[m];
  loaded(mv.dest);
  const auto& src = inst_[mv.source];
  const auto& mc = cfg_.models[src.model];
  std::int64_t tokens = 0;
  for (auto r : src.seqs)
    tokens += tokens_now(r);
  // The destination prefills every token the moved sequences have, then the source pauses and
  // hands off the last few tokens.
  mv.tokens = tokens;
  mv.resume_seconds =
      static_cast<double>(tokens) / mc.prefill_tps + cfg_.handoff_steps / mc.decode_tps;
  push(now_ + mv.resume_seconds, ev::move_done, m);
}

void sim_cluster::on_move_done(std::size_t m) {
  auto& mv = moves_[m];
  est_.migration.observe(static_cast<double>(mv.tokens), mv.resume_seconds);
  ++out_.migrations;
  out_.migrated_tokens += static_cast<std::uint64_t>(mv.tokens);
  auto& src = inst_[mv.source];
  auto& dest = inst_[mv.dest];
  const auto& mc = cfg_.models[src.model];
  const double pause = cfg_.handoff_steps / mc.decode_tps;
  // The sequences continue on the destination after the handoff pause.
  const auto moved = src.seqs.size();
  dest.seqs = std::move(src.seqs);
  src.seqs.clear();
  sequences_changed(mv.source, moved);
  for (auto r : dest.seqs) {
    auto& s = rs_[r];
    if (s.first > now_)
      s.first += pause;
    s.done += pause;
    s.inst = mv.dest;
    ++s.gen;
    push(s.done, ev::seq_done, r, s.gen);
  }
  dest.st = state::running;
  if (auto* v = view_of(mv.dest))
    v->movable = true;
  sequences_changed(mv.dest, 0);
  auto& list = models_[src.model].instances;
  std::replace(list.begin(), list.end(), mv.source, mv.dest);
  // The source's slot goes to the instance that waited for it.
  vacate(mv.source);
  src.st = state::stopped;
  auto& w = inst_[mv.waiting];
  w.st = state::loading;
  occupy(mv.waiting);
  ++out_.cold_starts[static_cast<std::size_t>(w.source)];
  push(begin_load(mv.waiting), ev::load_done, mv.waiting);
  const auto moved_model = dest.model;
  dispatch(moved_model);
  if (inst_[mv.dest].st == state::running && inst_[mv.dest].seqs.empty())
    went_idle(mv.dest);
}

} // namespace thaw::sched
