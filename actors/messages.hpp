#pragma once
/// Every message of thaw's actors: atoms, plain structs with an `inspect` overload, and
/// `add_message_types`, which announces them to an actor system (CAF 0.17 has no type-id blocks;
/// announcing every type in one function is its equivalent, CONVENTIONS.md rule 4). Types that
/// cross the network are inspectable; the few that carry local pointers (the gateway's HTTP
/// responder, a model's shared tokenizer) are marked local-only at the bottom.

#include "runtime/common/error.hpp"
#include "runtime/engine/engine.hpp"

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/send.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace thaw {

// --- atoms (at most 10 characters each) ------------------------------------------------------

using step_atom = caf::atom_constant<caf::atom("step")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using place_atom = caf::atom_constant<caf::atom("place")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using deploy_atom = caf::atom_constant<caf::atom("deploy")>;
using delete_atom = caf::atom_constant<caf::atom("delete")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using sub_atom = caf::atom_constant<caf::atom("subscribe")>;
using node_atom = caf::atom_constant<caf::atom("node")>;
using migrate_atom = caf::atom_constant<caf::atom("migrate")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using prefetch_atom = caf::atom_constant<caf::atom("prefetch")>;
using pull_atom = caf::atom_constant<caf::atom("pull")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using open_atom = caf::atom_constant<caf::atom("open")>;
using lend_atom = caf::atom_constant<caf::atom("lend")>;
using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
using changed_atom = caf::atom_constant<caf::atom("changed")>;

// --- inspect for the engine's and runtime's value types ---------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, error& x) {
  return f(caf::meta::type_name("thaw_error"), x.code, x.message);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  return f(caf::meta::type_name("sampling_params"), x.temperature, x.top_k, x.top_p, x.min_p,
           x.seed, x.logprobs);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_logprob& x) {
  return f(caf::meta::type_name("token_logprob"), x.id, x.logprob);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generation_request& x) {
  return f(caf::meta::type_name("generation_request"), x.prompt, x.sampling, x.max_tokens, x.stop,
           x.stop_token_ids, x.ignore_eos);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rng_state& x) {
  return f(caf::meta::type_name("rng_state"), x.seed, x.counter);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_state& x) {
  return f(caf::meta::type_name("sequence_state"), x.request, x.generated, x.rng, x.stop_pending,
           x.stop_stopped);
}

// --- models --------------------------------------------------------------------------------

/// A deployed model and its serving settings (registry, router, scheduler, node).
struct model_spec {
  std::string name;
  std::string checkpoint;                ///< checkpoint directory on the nodes
  std::int32_t min_instances = 0;        ///< kept running even when idle
  std::int32_t max_instances = 1;        ///< scale-out limit
  std::int32_t target_concurrency = 8;   ///< sequences per instance before scaling out
  std::int64_t keep_alive_ms = 300'000;  ///< idle time before an instance above min stops
  std::int32_t queue_limit = 256;        ///< requests waiting or running at most; more get 429
  std::int32_t kv_blocks = 256;          ///< KV cache blocks of 16 tokens per instance
  std::int32_t threads = 0;              ///< compute threads per instance; 0: node's default
  /// Chat format when the tokenizer has no template: "llama2", "llama3" or "chatml"; "": none.
  std::string chat_template;
  /// Expected soon: on deploy, read its checkpoint into the DRAM tier of the node it would
  /// start on, so that its first cold start loads from memory.
  bool prefetch = false;
  /// The checkpoint's size, set by the registry when it validates a deployment (not a setting):
  /// the scheduler's startup and migration estimates are bytes over bandwidths.
  std::uint64_t weight_bytes = 0;
  /// The deployed checkpoint's content id (checkpoint::content_id), set by the registry likewise:
  /// a node whose copy at `checkpoint` has other content does not serve it as this model (it
  /// pulls the deployed one from a peer instead). Empty: not checked.
  std::string content_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, model_spec& x) {
  return f(caf::meta::type_name("model_spec"), x.name, x.checkpoint, x.min_instances,
           x.max_instances, x.target_concurrency, x.keep_alive_ms, x.queue_limit, x.kv_blocks,
           x.threads, x.chat_template, x.prefetch, x.weight_bytes, x.content_id);
}

// --- requests and token events --------------------------------------------------------------

/// gateway -> router: run one sequence; events go to `sink` as `token_event`s.
struct submit_request {
  std::uint64_t request_id = 0;
  generation_request request;
  caf::actor sink;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, submit_request& x) {
  return f(caf::meta::type_name("submit_request"), x.request_id, x.request, x.sink);
}

/// router -> instance: run one sequence; events go back to the sender (the router). With
/// generated tokens in `state` it is a resumed sequence (failover): the instance imports it
/// and its first event is token number state.generated.size().
struct instance_request {
  std::uint64_t request_id = 0;
  sequence_state state; ///< state.request is the request; rng and stop state matter on resume
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_request& x) {
  return f(caf::meta::type_name("instance_request"), x.request_id, x.state);
}

/// gateway -> router -> instance: drop a sequence and free its KV blocks.
struct cancel_request {
  std::uint64_t request_id = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cancel_request& x) {
  return f(caf::meta::type_name("cancel_request"), x.request_id);
}

/// instance -> router -> gateway: one sampled token (and its final text), or the end of a
/// sequence. `seq` numbers a request's events from 0, so a receiver sees gaps and duplicates.
/// `failed` ends the request with `failure` (finish == error).
///
/// From the instance, `index` is the token's place among the generated tokens (-1: no token)
/// and `rng` / `stop_pending` the sequence's resume state after it: the router commits events
/// in index order whichever instance sent them (a migrated sequence's events come from two),
/// and its log of them is the snapshot a failover resumes from.
struct token_event {
  std::uint64_t request_id = 0;
  std::uint32_t seq = 0;
  std::int32_t index = -1;
  rng_state rng;
  std::string stop_pending;
  std::int32_t token = -1;
  float logprob = 0.0f;
  std::vector<token_logprob> top;
  std::string text;
  finish_reason finish = finish_reason::none;
  std::string stop_reason;
  std::int32_t cached_tokens = 0;
  bool failed = false;
  error failure;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_event& x) {
  return f(caf::meta::type_name("token_event"), x.request_id, x.seq, x.index, x.rng,
           x.stop_pending, x.token, x.logprob, x.top, x.text, x.finish, x.stop_reason,
           x.cached_tokens, x.failed, x.failure);
}

// --- live migration (ARCHITECTURE.md section 3) ------------------------------------------------
//
//   router --(migrate_atom, migrate_order)--> source A         (A answers migration_report)
//   A --migrate_state{final=false}--> target B   B imports it held, prefills, answers
//   B --migrate_ack--> A                         A: gap > max_gap? another round : final
//   A --migrate_state{final=true, sink}--> B     A cancels its copy; B decodes on, events to sink
//   A --migrate_handoff--> router                router re-points the request to B
//   A --migrate_drop--> B                        the sequence ended on A, or the migration aborted

/// router -> source instance: move every sequence to `target` (an instance of the same model).
struct migrate_order {
  /// Rounds per sequence after which it is handed off whatever the gap.
  static constexpr std::int32_t max_rounds = 8;
  caf::actor target;
  std::int32_t max_gap = 1;        ///< tokens the target may lag when the source hands off
  std::int64_t timeout_ms = 30'000; ///< abort (the source keeps its sequences) after this
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_order& x) {
  return f(caf::meta::type_name("migrate_order"), x.target, x.max_gap, x.timeout_ms);
}

/// source -> target: one round of a sequence's state; the final one hands it over.
struct migrate_state {
  std::uint64_t request_id = 0;
  sequence_state state;
  bool final = false;
  caf::actor sink; ///< final: where the target sends the sequence's events (the router)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_state& x) {
  return f(caf::meta::type_name("migrate_state"), x.request_id, x.state, x.final, x.sink);
}

/// target -> source: the KV cache of `tokens` tokens is rebuilt (or the import failed).
struct migrate_ack {
  std::uint64_t request_id = 0;
  std::int32_t tokens = 0;
  bool failed = false;
  error failure;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_ack& x) {
  return f(caf::meta::type_name("migrate_ack"), x.request_id, x.tokens, x.failed, x.failure);
}

/// source -> target: forget a held sequence.
struct migrate_drop {
  std::uint64_t request_id = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_drop& x) {
  return f(caf::meta::type_name("migrate_drop"), x.request_id);
}

/// source -> router: request `request_id` runs on `target` from token `next_index` on.
struct migrate_handoff {
  std::uint64_t request_id = 0;
  caf::actor target;
  std::int32_t next_index = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_handoff& x) {
  return f(caf::meta::type_name("migrate_handoff"), x.request_id, x.target, x.next_index);
}

/// source -> router: how a migration went. `aborted` carries why, when the target failed or
/// the deadline passed; the sequences not handed off then stayed on the source.
struct migration_report {
  std::int32_t moved = 0;              ///< sequences handed off
  std::int32_t finished_on_source = 0; ///< ended before their handoff
  std::int32_t kept = 0;               ///< left on the source by an abort
  std::int32_t rounds = 0;             ///< state messages sent, all sequences
  std::int64_t tokens_sent = 0;        ///< tokens the target prefilled (recomputed)
  bool aborted = false;
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migration_report& x) {
  return f(caf::meta::type_name("migration_report"), x.moved, x.finished_on_source, x.kept,
           x.rounds, x.tokens_sent, x.aborted, x.reason);
}

/// A token_event that ends request `id` with error `e` before any token.
[[nodiscard]] token_event failure_event(std::uint64_t id, error e);

/// Sends to `dest`, an untyped handle (a router, a request's sink), with `self` as the sender,
/// which a router tells its instances' events apart by. A typed actor's send() takes typed
/// receivers only, and anon_send() would drop the sender.
template <class Self, class... Ts>
void tell(Self* self, const caf::actor& dest, Ts&&... xs) {
  caf::unsafe_send_as(self, dest, std::forward<Ts>(xs)...);
}

// --- node, slots, instances --------------------------------------------------------------

/// One instance as its node reports it.
struct instance_info {
  std::string model;
  caf::actor handle;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_info& x) {
  return f(caf::meta::type_name("instance_info"), x.model, x.handle);
}

/// One slot (a device, or a CPU slot) as its node reports it.
struct slot_info {
  std::int32_t index = 0;
  std::string kind;              ///< "cpu" or "cuda"
  std::uint64_t memory_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::vector<std::string> models;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_info& x) {
  return f(caf::meta::type_name("slot_info"), x.index, x.kind, x.memory_bytes, x.used_bytes,
           x.models);
}

/// node -> scheduler: what a node holds and can take (on registration and on every change).
struct node_status {
  std::string name;
  caf::actor handle;
  std::vector<std::string> dram_models;  ///< checkpoints held in the DRAM tier (directories)
  /// Checkpoints this node has read from its SSD (not those it pulled from a peer).
  std::vector<std::string> local_models;
  std::vector<slot_info> slots;
  std::vector<instance_info> instances;
  std::uint64_t dram_bytes = 0;          ///< DRAM tier capacity
  std::uint64_t dram_used_bytes = 0;
  double ssd_bandwidth = 0;              ///< bytes/s of the last SSD load, 0 when none yet
  double dram_bandwidth = 0;             ///< bytes/s of the last DRAM-tier load
  double remote_bandwidth = 0;           ///< bytes/s of the last pull from a peer's DRAM (UCX)
  std::uint64_t loads_ssd = 0;
  std::uint64_t loads_dram = 0;
  std::uint64_t loads_remote = 0;        ///< starts whose weights were pulled from a peer
  std::uint64_t starts_in_place = 0; ///< instances that run on the DRAM tier's bytes, no copy
  /// The node's loader queue when it reported: bytes still to move from SSD and from DRAM.
  std::uint64_t queued_ssd_bytes = 0;
  std::uint64_t queued_dram_bytes = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("node_status"), x.name, x.handle, x.dram_models,
           x.local_models, x.slots,
           x.instances, x.dram_bytes, x.dram_used_bytes, x.ssd_bandwidth, x.dram_bandwidth,
           x.remote_bandwidth, x.loads_ssd, x.loads_dram, x.loads_remote, x.starts_in_place,
           x.queued_ssd_bytes, x.queued_dram_bytes);
}

/// peer node -> node (the answer to (pull_atom, checkpoint, the puller's pool chunk size)): the
/// peer holds the checkpoint in
/// its DRAM tier, pinned and published on its UCX data plane under `key` until the puller sends
/// (release_atom, key) or goes away. What the puller needs besides the bytes comes along: the
/// manifest (checkpoint::from_manifest) and the tokenizer.
struct pull_offer {
  std::string node;          ///< the peer's name, for messages
  std::string host;          ///< its data plane's address and port
  std::uint16_t port = 0;
  std::string key;
  std::uint64_t chunk_bytes = 0; ///< the peer's pool chunk size (see remote_source)
  std::string manifest;      ///< manifest.bin
  std::string tokenizer_json;
  std::string tokenizer_config; ///< tokenizer_config.json; empty when the checkpoint has none
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pull_offer& x) {
  return f(caf::meta::type_name("pull_offer"), x.node, x.host, x.port, x.key, x.chunk_bytes,
           x.manifest,
           x.tokenizer_json, x.tokenizer_config);
}

/// node -> router (through the scheduler): an instance is loaded and serving.
struct instance_started {
  caf::actor handle;
  std::string node;
  std::string source;   ///< "ssd", "dram" or "remote" (a peer's DRAM over UCX): its weights' tier
  double load_seconds = 0;     ///< spawn to ready: the weights, the runner, the tokenizer
  double transfer_seconds = 0; ///< the weights' move alone (what tier bandwidths are made of)
  /// The weights are the DRAM tier's own bytes, copied nowhere (source "dram": they were there
  /// already; "ssd": read into the tier for this start).
  bool mapped = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_started& x) {
  return f(caf::meta::type_name("instance_started"), x.handle, x.node, x.source, x.load_seconds,
           x.transfer_seconds, x.mapped);
}

/// router -> anyone asking: a model's serving state.
struct model_status {
  std::string name;
  std::int32_t instances = 0;
  std::int32_t starting = 0;
  std::int32_t queued = 0;    ///< waiting for an instance
  std::int32_t in_flight = 0; ///< sent to an instance, not finished
  std::uint64_t cold_starts = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, model_status& x) {
  return f(caf::meta::type_name("model_status"), x.name, x.instances, x.starting, x.queued,
           x.in_flight, x.cold_starts);
}

// --- cluster ----------------------------------------------------------------------------

/// The version of the messages above as they cross the network; a node whose version differs
/// from the head's is refused at registration. Raise it whenever a networked type changes.
inline constexpr std::uint32_t cluster_protocol_version = 10;

/// node -> head actor: asks to join the cluster. The head answers with its scheduler (the node
/// then reports to it with (node_atom, node_status)) or refuses with an error.
struct join_cluster {
  std::uint32_t protocol_version = cluster_protocol_version;
  std::string secret;
  std::string node_name;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_cluster& x) {
  return f(caf::meta::type_name("join_cluster"), x.protocol_version, x.secret, x.node_name);
}

/// thaw errors inside CAF (a request's error reply): category "thaw", code errc, the message as
/// context. from_caf turns any caf::error back (CAF's own errors become `internal` or
/// `io_error` with CAF's description).
[[nodiscard]] caf::error to_caf(const error& e);
[[nodiscard]] error from_caf(const caf::error& e);

/// Announces every type above (and the local-only ones) to a configuration.
void add_message_types(caf::actor_system_config& cfg);

} // namespace thaw
