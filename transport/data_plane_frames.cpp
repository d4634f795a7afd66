#include "transport/data_plane_frames.hpp"

#include "schema/data_plane.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <cstring>
#include <kj/exception.h>

namespace thaw::transport {
namespace {

std::vector<std::byte> to_bytes(capnp::MessageBuilder& message) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

// Frames arrive at whatever alignment UCX delivers them; Cap'n Proto wants words.
kj::Array<capnp::word> to_words(std::span<const std::byte> bytes) {
  auto words = kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) /
                                          sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  if (!bytes.empty())
    std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

} // namespace

std::vector<std::byte> encode(const request_frame& frame) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schema::Request>();
  r.setVersion(frame.version);
  r.setRequestId(frame.id);
  switch (frame.kind) {
  case request_kind::describe: r.setDescribe(frame.key); break;
  case request_kind::fetch_start: r.setFetchStart(frame.key); break;
  case request_kind::fetch_end: r.setFetchEnd(frame.lease); break;
  case request_kind::fetch_poll: r.setFetchPoll(frame.lease); break;
  }
  return to_bytes(message);
}

std::vector<std::byte> encode(const reply_frame& frame) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schema::Reply>();
  r.setVersion(frame.version);
  r.setRequestId(frame.id);
  switch (frame.code) {
  case reply_code::ok: r.setCode(schema::ReplyCode::OK); break;
  case reply_code::not_found: r.setCode(schema::ReplyCode::NOT_FOUND); break;
  case reply_code::unsupported: r.setCode(schema::ReplyCode::UNSUPPORTED); break;
  case reply_code::invalid: r.setCode(schema::ReplyCode::INVALID); break;
  }
  r.setMessage(frame.message);
  auto segments = r.initSegments(static_cast<unsigned>(frame.segments.size()));
  for (unsigned i = 0; i < frame.segments.size(); ++i) {
    segments[i].setAddress(frame.segments[i].address);
    segments[i].setSize(frame.segments[i].size);
    segments[i].setRegion(frame.segments[i].region);
  }
  auto rkeys = r.initRkeys(static_cast<unsigned>(frame.rkeys.size()));
  for (unsigned i = 0; i < frame.rkeys.size(); ++i) {
    const auto& k = frame.rkeys[i];
    rkeys.set(i, kj::arrayPtr(reinterpret_cast<const kj::byte*>(k.data()), k.size()));
  }
  r.setLease(frame.lease);
  r.setWorkerAddress(kj::arrayPtr(reinterpret_cast<const kj::byte*>(frame.worker_address.data()),
                                  frame.worker_address.size()));
  return to_bytes(message);
}

expected<request_frame> decode_request(std::span<const std::byte> bytes) {
  try {
    const auto words = to_words(bytes);
    capnp::FlatArrayMessageReader message{words.asPtr()};
    auto r = message.getRoot<schema::Request>();
    request_frame f;
    f.version = r.getVersion();
    f.id = r.getRequestId();
    switch (r.which()) {
    case schema::Request::DESCRIBE:
      f.kind = request_kind::describe;
      f.key = r.getDescribe().cStr();
      break;
    case schema::Request::FETCH_START:
      f.kind = request_kind::fetch_start;
      f.key = r.getFetchStart().cStr();
      break;
    case schema::Request::FETCH_END:
      f.kind = request_kind::fetch_end;
      f.lease = r.getFetchEnd();
      break;
    case schema::Request::FETCH_POLL:
      f.kind = request_kind::fetch_poll;
      f.lease = r.getFetchPoll();
      break;
    default: return make_error(errc::parse_error, "data plane request: unknown kind");
    }
    return f;
  } catch (const kj::Exception& e) {
    return make_error(errc::parse_error,
                      std::string{"data plane request: "} + e.getDescription().cStr());
  }
}

expected<reply_frame> decode_reply(std::span<const std::byte> bytes) {
  try {
    const auto words = to_words(bytes);
    capnp::FlatArrayMessageReader message{words.asPtr()};
    auto r = message.getRoot<schema::Reply>();
    reply_frame f;
    f.version = r.getVersion();
    f.id = r.getRequestId();
    switch (r.getCode()) {
    case schema::ReplyCode::OK: f.code = reply_code::ok; break;
    case schema::ReplyCode::NOT_FOUND: f.code = reply_code::not_found; break;
    case schema::ReplyCode::UNSUPPORTED: f.code = reply_code::unsupported; break;
    default: f.code = reply_code::invalid; break;
    }
    f.message = r.getMessage().cStr();
    for (auto s : r.getSegments())
      f.segments.push_back({s.getAddress(), s.getSize(), s.getRegion()});
    for (auto k : r.getRkeys()) {
      std::vector<std::byte> key(k.size());
      if (k.size() != 0)
        std::memcpy(key.data(), k.begin(), k.size());
      f.rkeys.push_back(std::move(key));
    }
    f.lease = r.getLease();
    const auto address = r.getWorkerAddress();
    f.worker_address.resize(address.size());
    if (address.size() != 0)
      std::memcpy(f.worker_address.data(), address.begin(), address.size());
    return f;
  } catch (const kj::Exception& e) {
    return make_error(errc::parse_error,
                      std::string{"data plane reply: "} + e.getDescription().cStr());
  }
}

} // namespace thaw::transport
