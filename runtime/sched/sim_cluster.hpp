#pragma once
/// The simulator's state and event loop (see sim.hpp for what is modelled). Internal to
/// runtime/sched: `simulate` is the interface.
///
/// Instance lifecycle in the simulation:
///
///   waiting_slot --(the moved instance leaves its slot)--> loading
///   loading --(checkpoint loaded)--> running --(keep-alive over, above min)--> stopped
///   running --(idle, its slot taken by a placement)--> stopped
///   running --(chosen for migration)--> moving_source --(handoff)--> stopped
///   moving_dest --(checkpoint loaded, tokens recomputed, handoff)--> running

#include "runtime/sched/lru_tier.hpp"
#include "runtime/sched/sim.hpp"

#include <deque>
#include <queue>
#include <unordered_map>

namespace thaw::sched {

class sim_cluster {
public:
  sim_cluster(const sim_config& cfg, const std::vector<sim_request>& requests);
  [[nodiscard]] sim_result run();

private:
  enum class state : std::uint8_t { waiting_slot, loading, running, moving_source, moving_dest, stopped };
  enum class ev : std::uint8_t { load_done, seq_done, keep_alive, move_loaded, move_done };

  struct event {
    double t;
    std::uint64_t order;
    ev kind;
    std::uint64_t a, b;
    bool operator>(const event& o) const { return t != o.t ? t > o.t : order > o.order; }
  };
  struct instance {
    std::uint32_t model = 0, node = 0;
    std::int32_t slot = -1;
    state st = state::loading;
    tier source = tier::remote;
    std::vector<std::uint32_t> seqs; // request indices
    std::uint64_t idle_gen = 0;
    std::uint64_t move = 0;          // index + 1 of the migration it is part of
    double load_seconds = 0;         // how long its checkpoint load took
  };
  struct request_state {
    double start = -1, first = 0, done = 0;
    std::uint64_t inst = 0, gen = 0;
  };
  struct model_state {
    std::deque<std::uint32_t> queue;
    std::vector<std::uint64_t> instances; // not stopped, not a migration's destination
    std::int32_t starting = 0;            // waiting_slot or loading
    bool waiting_for_slot = false;
  };
  struct node_state {
    double loader_free_at = 0;
    std::array<double, tier_count> factor{};
    lru_tier dram, ssd;
  };
  struct move_state {
    std::uint64_t source = 0, dest = 0, waiting = 0;
    std::int64_t tokens = 0;
    double resume_seconds = 0;
  };

  void push(double t, ev kind, std::uint64_t a, std::uint64_t b = 0);
  void advance(double t);
  void on_arrival(std::uint32_t r);
  void on_load_done(std::uint64_t id);
  void on_seq_done(std::uint32_t r, std::uint64_t gen);
  void on_keep_alive(std::uint64_t id, std::uint64_t gen);
  void on_move_loaded(std::size_t m);
  void on_move_done(std::size_t m);

  void dispatch(std::uint32_t model);
  /// Starts instances while the model's queue needs them; false when no slot could be had.
  bool scale(std::uint32_t model);
  void execute(const decision& d, std::uint32_t model);
  void on_slot_available();
  void went_idle(std::uint64_t id);
  void stop(std::uint64_t id);
  void start_seq(std::uint64_t id, std::uint32_t r);
  /// Keeps the busy-slot count and the view in step after the instance had `before` sequences.
  void sequences_changed(std::uint64_t id, std::size_t before);

  std::uint64_t new_instance(std::uint32_t model, std::uint32_t node, std::int32_t slot, state st,
                             tier source);
  void occupy(std::uint64_t id);   // puts the instance into its slot in the view
  void vacate(std::uint64_t id);   // frees its slot in the view
  instance_view* view_of(std::uint64_t id);
  /// Queues the instance's checkpoint on its node's loader; returns when the load completes.
  double begin_load(std::uint64_t id);
  /// A load completed: the estimator learns from it and the node's tiers take the model.
  void loaded(std::uint64_t id);
  [[nodiscard]] std::int64_t tokens_now(std::uint32_t r) const;
  void refresh_view();

  const sim_config& cfg_;
  const std::vector<sim_request>& req_;
  sim_result out_;
  estimators est_;
  placer placer_;
  cluster_view view_;
  std::vector<node_state> nodes_;
  std::vector<model_state> models_;
  std::vector<instance> inst_; // by id; id 0 unused
  std::vector<request_state> rs_;
  std::vector<move_state> moves_;
  std::deque<std::uint32_t> waiting_;
  std::priority_queue<event, std::vector<event>, std::greater<>> events_;
  std::uint64_t order_ = 0;
  double now_ = 0, last_ = 0;
  std::int64_t occupied_ = 0, busy_ = 0;
};

} // namespace thaw::sched
