// Prefill and decode tokens/s of llama.cpp (the shared libraries shipped in
// @node-llama-cpp/linux-x64) on a GGUF model, for comparison with `thaw bench engine`.
//
//   llama_bench MODEL.gguf BACKEND_DIR [--prompt-len P] [--gen G] [--threads T] [--repeats R]
//               [--warmup W]
//
// Context as in llama_logits.c: n_ctx 512, n_batch = n_ubatch 512, K/V cache in f32, flash
// attention off, n_threads = n_threads_batch = T. Each repeat clears the memory (K/V cache), then
// times one llama_decode over P tokens (ids (1 + 7919 (i + 1)) mod V, the prompt of sequence 0 in
// bench/engine_bench.cpp; only the last position outputs logits), then G llama_decode calls of one
// token each (greedy argmax of the last logits, fed back; the argmaxes are timed with decode, as
// in engine_bench.cpp). Clock: CLOCK_MONOTONIC. Prints JSON with the median (and min, max) over R
// repeats of prefill and decode tokens/s. --warmup W runs W untimed repeats first (default 0,
// like engine_bench.cpp, whose median of 3 absorbs a slow first run).
#define _POSIX_C_SOURCE 199309L // clock_gettime under -std=c11
#include <ggml-backend.h>
#include <llama.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_WARN)
    fputs(text, stderr);
}

static bool no_progress(float progress, void* user) {
  (void)progress;
  (void)user;
  return true;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static llama_token argmax(const float* row, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (row[i] > row[best])
      best = i;
  return (llama_token)best;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: %s MODEL.gguf BACKEND_DIR [--prompt-len P] [--gen G] [--threads T] "
            "[--repeats R] [--warmup W]\n",
            argv[0]);
    return 2;
  }
  int P = 64, G = 64, T = 1, R = 3, W = 0;
  for (int i = 3; i < argc; i += 2) {
    if (i + 1 >= argc) {
      fprintf(stderr, "missing value for %s\n", argv[i]);
      return 2;
    }
    const int v = atoi(argv[i + 1]);
    if (!strcmp(argv[i], "--prompt-len")) P = v;
    else if (!strcmp(argv[i], "--gen")) G = v;
    else if (!strcmp(argv[i], "--threads")) T = v;
    else if (!strcmp(argv[i], "--repeats")) R = v;
    else if (!strcmp(argv[i], "--warmup")) W = v;
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (P < 1 || G < 1 || T < 1 || R < 1 || W < 0 || P + G + 1 > 512) {
    fprintf(stderr, "need P, G, T, R >= 1, W >= 0 and P + G + 1 <= 512 (n_ctx)\n");
    return 2;
  }
  llama_log_set(quiet_log, NULL);
  ggml_backend_load_all_from_path(argv[2]);
  llama_backend_init();

  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.progress_callback = no_progress; // no dots on stderr
  struct llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "cannot load %s\n", argv[1]);
    return 1;
  }
  const struct llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 512;
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_seq_max = 1;
  cp.n_threads = T;
  cp.n_threads_batch = T;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  struct llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    fprintf(stderr, "cannot create a context\n");
    return 1;
  }
  llama_memory_t mem = llama_get_memory(ctx);

  llama_token* prompt = malloc(sizeof(llama_token) * (size_t)P);
  for (int i = 0; i < P; ++i)
    prompt[i] = (llama_token)((1 + 7919ull * (uint64_t)(i + 1)) % (uint64_t)n_vocab);

  struct llama_batch batch = llama_batch_init(P, 0, 1);
  double* pf = malloc(sizeof(double) * (size_t)R);
  double* dc = malloc(sizeof(double) * (size_t)R);
  llama_token last = 0;
  for (int r = -W; r < R; ++r) { // r < 0: warm-up
    llama_memory_clear(mem, true);
    for (int i = 0; i < P; ++i) {
      batch.token[i] = prompt[i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = i == P - 1;
    }
    batch.n_tokens = P;
    double t0 = now_s();
    if (llama_decode(ctx, batch) != 0) {
      fprintf(stderr, "llama_decode (prefill) failed\n");
      return 1;
    }
    double t1 = now_s();
    llama_token tok = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    double t2 = now_s();
    for (int g = 0; g < G; ++g) {
      batch.token[0] = tok;
      batch.pos[0] = P + g;
      batch.n_seq_id[0] = 1;
      batch.seq_id[0][0] = 0;
      batch.logits[0] = 1;
      batch.n_tokens = 1;
      if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "llama_decode (step %d) failed\n", g);
        return 1;
      }
      tok = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    }
    double t3 = now_s();
    last = tok;
    if (r >= 0) {
      pf[r] = P / (t1 - t0);
      dc[r] = G / (t3 - t2);
    }
  }
  double pf_min = pf[0], pf_max = pf[0], dc_min = dc[0], dc_max = dc[0];
  for (int r = 1; r < R; ++r) {
    if (pf[r] < pf_min) pf_min = pf[r];
    if (pf[r] > pf_max) pf_max = pf[r];
    if (dc[r] < dc_min) dc_min = dc[r];
    if (dc[r] > dc_max) dc_max = dc[r];
  }
  const double pf_med = median(pf, R), dc_med = median(dc, R);
  char sysinfo[1024];
  snprintf(sysinfo, sizeof sysinfo, "%s", llama_print_system_info());
  for (char* c = sysinfo; *c; ++c)
    if (*c == '"' || *c == '\\' || *c == '\n') *c = ' ';
  printf("{\"prompt_len\": %d, \"gen\": %d, \"threads\": %d, \"repeats\": %d, \"warmup\": %d, \"n_vocab\": %d, "
         "\"prefill_tok_s\": %.3f, \"prefill_tok_s_min\": %.3f, \"prefill_tok_s_max\": %.3f, "
         "\"decode_tok_s\": %.3f, \"decode_tok_s_min\": %.3f, \"decode_tok_s_max\": %.3f, "
         "\"last_token\": %d, \"system_info\": \"%s\"}\n",
         P, G, T, R, W, n_vocab, pf_med, pf_min, pf_max, dc_med, dc_min, dc_max, (int)last, sysinfo);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  free(prompt);
  free(pf);
  free(dc);
  return 0;
}
