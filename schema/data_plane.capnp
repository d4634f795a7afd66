# Frames of thaw's UCX data plane (transport/data_plane.hpp, ARCHITECTURE.md section 9). A client
# sends a Request as a UCX active message; the server answers with a Reply carrying the same
# requestId. Bulk bytes never travel in frames: the client reads them with RMA gets using the
# remote addresses and packed rkeys a fetchStart reply hands out. Field numbers are forever: add
# fields, never renumber. `version` is checked first; a peer speaking another version is refused.
@0xd344bca6e3cfa43d;

$import "/capnp/c++.capnp".namespace("thaw::schema");

struct Request {
  version @0 :UInt32;
  requestId @1 :UInt64;
  union {
    describe @2 :Text;          # key: reply with the segment sizes
    fetchStart @3 :Text;        # key: pin the entry, reply with sizes, addresses and rkeys
    fetchEnd @4 :UInt64;        # lease id from a fetchStart reply: release the pin
    fetchPoll @5 :UInt64;       # lease id: the client's gets need this worker to progress them
                                # (UCX emulates them with messages): poll until fetchEnd
  }
}

enum ReplyCode {
  ok @0;
  notFound @1;                  # the key is not published here
  unsupported @2;               # the request's protocol version is not ours
  invalid @3;                   # malformed request
}

# One segment of a published entry: `size` bytes at `address` in the server's memory, covered by
# the registered region whose packed rkey is `rkeys[region]`.
struct Segment {
  address @0 :UInt64;
  size @1 :UInt64;
  region @2 :UInt32;
}

struct Reply {
  version @0 :UInt32;
  requestId @1 :UInt64;
  code @2 :ReplyCode;
  message @3 :Text;             # for a person, when code is not ok
  segments @4 :List(Segment);   # describe: address 0 and region 0; fetchStart: full
  rkeys @5 :List(Data);         # fetchStart: packed rkeys of the regions the segments use
  lease @6 :UInt64;             # fetchStart: pass back in fetchEnd
  workerAddress @7 :Data;       # fetchStart: the server's UCX worker address, for the RMA endpoint
}
