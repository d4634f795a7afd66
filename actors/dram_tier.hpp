#pragma once
/// The DRAM tier actor: the node's side of the loader's DRAM tier (its chunk pool, with the
/// models it holds in LRU order). It reads checkpoints in ahead of their starts (prefetch), gets
/// the node models that are not on its disk from its peers' DRAM tiers (the remote tier: a pull
/// over the UCX data plane), and lends the models it holds to peers that pull them.
///
///   (prefetch_atom, std::string dir) -> prefetched | error
///       reads the checkpoint (opened through the SSD tier) into the tier without starting an
///       instance, evicting least recently used unpinned models if need be; at once (seconds 0)
///       when it is there. resource_exhausted when the tier could never hold it; while loads
///       in progress pin the room it needs, it waits for them.
///   (fetch_atom, model_spec, std::vector<caf::actor> peers, std::string why_not_local)
///       -> dram_model | error
///       the model of `spec`, not on this node's disk (`why_not_local` says why), pinned in the
///       tier: from the tier when it was pulled before and is still there, else pulled from the
///       first of `peers` (nodes) that lends it. not_found, naming every peer's refusal, when
///       none does; also when there is no data plane or no peer to ask.
///   (pull_atom, std::string dir, std::uint64_t pool_chunk_bytes) -> pull_offer | error
///       a peer's DRAM tier (the sender; the node delegates the ask here) pulls `dir`: it is
///       read in first if it is only on disk, pinned, and published on the data plane in the
///       pieces the peer's pool chunks take, until (release_atom, key) or the peer goes down.
///       unsupported without a data plane.
///   (release_atom, std::string key) -> void      ends a pull this tier served
///   (status_atom) -> dram_tier_report

#include "actors/messages.hpp"
#include "actors/node_context.hpp"
#include "actors/ssd_tier.hpp"
#include "runtime/loader/dram_tier.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace thaw {

/// A prefetch's outcome: the checkpoint's bytes and the seconds its read took (0: it was there).
struct prefetched {
  std::uint64_t bytes = 0;
  double seconds = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, prefetched& x) {
  return f(caf::meta::type_name("prefetched"), x.bytes, x.seconds);
}

/// A model in this node's DRAM tier that has no data files here, pinned until `hold` goes.
/// Local to a node, never sent over the network.
struct dram_model {
  std::shared_ptr<const checkpoint> ckpt;
  std::shared_ptr<dram_tier::lease> hold;
  /// > 0: pulled from a peer for this fetch, which took that long (the ask to the pin);
  /// 0: it was in the tier already.
  double pull_seconds = 0;
  double fetch_seconds = 0; ///< of pull_seconds, the bytes' move alone (loader::pull)
};

/// What the tier holds: the models ready in it (content ids, least recently used first) and,
/// of those pulled from peers, their checkpoint directories.
struct dram_tier_report {
  std::vector<std::string> ready;
  std::map<std::string, std::string> pulled; ///< content id -> directory
  std::uint64_t bytes = 0;                    ///< capacity
  std::uint64_t used_bytes = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dram_tier_report& x) {
  return f(caf::meta::type_name("dram_tier_report"), x.ready, x.pulled, x.bytes, x.used_bytes);
}

using dram_tier_actor = caf::typed_actor<
    caf::replies_to<prefetch_atom, std::string>::with<prefetched>,
    caf::replies_to<fetch_atom, model_spec, std::vector<caf::actor>, std::string>::with<
        dram_model>,
    caf::replies_to<pull_atom, std::string, std::uint64_t>::with<pull_offer>,
    caf::reacts_to<release_atom, std::string>,
    caf::replies_to<status_atom>::with<dram_tier_report>>;

/// Spawns the tier of `ctx`'s loader; it opens checkpoints through `ssd`.
[[nodiscard]] dram_tier_actor spawn_dram_tier(caf::actor_system& sys,
                                              std::shared_ptr<node_context> ctx,
                                              ssd_tier_actor ssd);

} // namespace thaw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::dram_model)
