// Runs llama.cpp (the shared libraries shipped in @node-llama-cpp/linux-x64) on a GGUF model and a
// token sequence, and writes the logits of every position as little-endian f32, row by row.
//
//   llama_logits MODEL.gguf BACKEND_DIR OUT.bin TOKEN...
//
// One llama_decode over the whole sequence with an output at every position; K/V cache in f32
// and flash attention off, so nothing is rounded to f16 on the way. Prints the vocabulary size
// and llama_print_system_info() on stderr.
#include <ggml-backend.h>
#include <llama.h>

#include <stdio.h>
#include <stdlib.h>

static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_WARN)
    fputs(text, stderr);
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s MODEL.gguf BACKEND_DIR OUT.bin TOKEN...\n", argv[0]);
    return 2;
  }
  llama_log_set(quiet_log, NULL);
  ggml_backend_load_all_from_path(argv[2]);
  llama_backend_init();

  const int n = argc - 4;
  llama_token* tokens = malloc(sizeof(llama_token) * (size_t)n);
  for (int i = 0; i < n; ++i)
    tokens[i] = (llama_token)atoi(argv[4 + i]);

  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  struct llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "cannot load %s\n", argv[1]);
    return 1;
  }
  const struct llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)(n < 64 ? 64 : n);
  cp.n_batch = cp.n_ctx;
  cp.n_ubatch = cp.n_ctx;
  cp.n_threads = 1;
  cp.n_threads_batch = 1;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  struct llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    fprintf(stderr, "cannot create a context\n");
    return 1;
  }

  struct llama_batch batch = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) {
    fprintf(stderr, "llama_decode failed\n");
    return 1;
  }
  FILE* out = fopen(argv[3], "wb");
  if (!out) {
    fprintf(stderr, "cannot write %s\n", argv[3]);
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    const float* row = llama_get_logits_ith(ctx, i);
    if (!row || fwrite(row, sizeof(float), (size_t)n_vocab, out) != (size_t)n_vocab) {
      fprintf(stderr, "no logits for position %d\n", i);
      return 1;
    }
  }
  fclose(out);
  fprintf(stderr, "n_vocab %d\nsystem_info %s\n", n_vocab, llama_print_system_info());
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  free(tokens);
  return 0;
}
