// A GGUF v3 writer, written from the format description (ggml/docs/gguf.md), shared by
// generate.mjs (f32 models) and tokenizer_gguf.mjs (vocab-only files). Not run in CI.
//
//   write_gguf(file, kv, tensors)
//     kv:      [key, type, value]; type one of T; an array value is [element type, items]
//     tensors: [name, shape (outermost first, as in safetensors), Float32Array]; may be empty
import fs from "node:fs";

/// GGUF metadata value types used here (gguf_type).
export const T = { u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9 };
/// Tensor data alignment; written as general.alignment by callers that write tensors.
export const ALIGN = 32;
const GGML_F32 = 0;

class byte_writer {
  constructor() { this.parts = []; this.size = 0; }
  push(b) { this.parts.push(b); this.size += b.length; }
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b); }
  i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.push(b); }
  str(s) { const b = Buffer.from(s, "utf8"); this.u64(b.length); this.push(b); }
  pad(align) { const r = this.size % align; if (r) this.push(Buffer.alloc(align - r)); }
}

function write_kv(w, key, type, value) {
  w.str(key);
  w.u32(type);
  if (type === T.u32) w.u32(value);
  else if (type === T.i32) w.i32(value);
  else if (type === T.f32) w.f32(value);
  else if (type === T.bool) w.push(Buffer.from([value ? 1 : 0]));
  else if (type === T.str) w.str(value);
  else if (type === T.arr) {
    const [elem, items] = value;
    w.u32(elem);
    w.u64(items.length);
    for (const it of items) {
      if (elem === T.str) w.str(it);
      else if (elem === T.f32) w.f32(it);
      else if (elem === T.i32) w.i32(it);
      else throw new Error(`array of type ${elem} not supported`);
    }
  } else throw new Error(`kv type ${type} not supported`);
}

export function write_gguf(file, kv, tensors = []) {
  const w = new byte_writer();
  w.push(Buffer.from("GGUF", "ascii"));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kv.length);
  for (const [k, t, v] of kv) write_kv(w, k, t, v);
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    w.str(name);
    w.u32(shape.length);
    for (const d of [...shape].reverse()) w.u64(d); // GGUF lists dimensions innermost first
    w.u32(GGML_F32);
    w.u64(offset);
    offset += Math.ceil((data.length * 4) / ALIGN) * ALIGN;
  }
  w.pad(ALIGN);
  for (const [, , data] of tensors) {
    w.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    w.pad(ALIGN);
  }
  fs.writeFileSync(file, Buffer.concat(w.parts));
}
