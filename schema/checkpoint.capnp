# The manifest of a thaw checkpoint (<model>/manifest.bin). The format is specified in
# schema/checkpoint.md. Field numbers are forever: add fields, never renumber.
@0x8a460c60f8e0fc75;

$import "/capnp/c++.capnp".namespace("thaw::schema");

enum DType {
  f32 @0;
  f16 @1;
  bf16 @2;
}

enum Architecture {
  llama @0;
  qwen2 @1;
  mistral @2;
}

struct RopeScaling {
  type @0 :Text;                              # "" = none; "linear", "dynamic", "llama3", "yarn"
  factor @1 :Float64 = 1.0;
  lowFreqFactor @2 :Float64 = 1.0;
  highFreqFactor @3 :Float64 = 4.0;
  originalMaxPositionEmbeddings @4 :UInt64;
}

struct ModelConfig {
  architecture @0 :Architecture;
  vocabSize @1 :UInt64;
  hiddenSize @2 :UInt64;
  intermediateSize @3 :UInt64;
  numLayers @4 :UInt64;
  numHeads @5 :UInt64;
  numKvHeads @6 :UInt64;
  headDim @7 :UInt64;
  maxPositionEmbeddings @8 :UInt64;
  ropeTheta @9 :Float64;
  rmsNormEps @10 :Float64;
  tieWordEmbeddings @11 :Bool;
  attentionBias @12 :Bool;
  slidingWindow @13 :UInt64;                  # 0 = none
  bosTokenId @14 :Int64 = -1;                 # -1 = none
  eosTokenIds @15 :List(Int64);
  ropeScaling @16 :RopeScaling;
  weightDtype @17 :DType;
}

struct Tensor {
  name @0 :Text;                              # Hugging Face name
  dtype @1 :DType;
  shape @2 :List(UInt64);
  file @3 :UInt32;                            # index into Manifest.files
  offset @4 :UInt64;                          # inside the file; multiple of 4096
  bytes @5 :UInt64;                           # product(shape) * size(dtype)
  layer @6 :Int32;                            # -1 embeddings, 0..L-1 layers, L final norm/head
}

struct DataFile {
  name @0 :Text;                              # "data-00000.bin"
  bytes @1 :UInt64;                           # multiple of 4096
  chunkBytes @2 :UInt64;                      # checksum granularity
  chunkChecksums @3 :List(UInt64);            # XXH3-64 per chunk
}

struct Manifest {
  formatVersion @0 :UInt32;                   # 1
  config @1 :ModelConfig;
  tensors @2 :List(Tensor);                   # in load order
  files @3 :List(DataFile);
  totalBytes @4 :UInt64;                      # sum of files' bytes = device buffer size
  source @5 :Text;                            # where it was converted from (free text)
}
