#pragma once
/// The data plane's frames as plain structs, and their Cap'n Proto encoding
/// (schema/data_plane.capnp). Keeps Cap'n Proto out of the rest of transport/.

#include "runtime/common/error.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace thaw::transport {

enum class request_kind : std::uint8_t { describe, fetch_start, fetch_end, fetch_poll };

/// Client to server.
struct request_frame {
  std::uint32_t version = 0;
  std::uint64_t id = 0;
  request_kind kind = request_kind::describe;
  std::string key;         ///< describe, fetch_start
  std::uint64_t lease = 0; ///< fetch_end, fetch_poll
};

enum class reply_code : std::uint8_t { ok, not_found, unsupported, invalid };

/// One served segment: `size` bytes at `address` in the server, in region `region`.
struct segment_desc {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  std::uint32_t region = 0;
};

/// Server to client.
struct reply_frame {
  std::uint32_t version = 0;
  std::uint64_t id = 0;
  reply_code code = reply_code::ok;
  std::string message;
  std::vector<segment_desc> segments;
  std::vector<std::vector<std::byte>> rkeys; ///< packed rkeys, indexed by segment_desc::region
  std::uint64_t lease = 0;
  std::vector<std::byte> worker_address; ///< fetch_start: for the client's RMA endpoint
};

/// Serialized frames: Cap'n Proto flat arrays (word-aligned storage).
[[nodiscard]] std::vector<std::byte> encode(const request_frame& frame);
[[nodiscard]] std::vector<std::byte> encode(const reply_frame& frame);

/// Parses a frame; parse_error for anything Cap'n Proto rejects. The version is returned as
/// sent: checking it is the caller's business.
[[nodiscard]] expected<request_frame> decode_request(std::span<const std::byte> bytes);
[[nodiscard]] expected<reply_frame> decode_reply(std::span<const std::byte> bytes);

} // namespace thaw::transport
