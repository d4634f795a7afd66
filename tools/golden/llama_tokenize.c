// Tokenizes texts with llama.cpp (the shared libraries shipped in @node-llama-cpp/linux-x64) and a
// vocab-only GGUF, the reference for tests/fixtures/tokenizer/ (see README.md).
//
//   llama_tokenize VOCAB.gguf INPUTS
//
// INPUTS holds the texts in the format of llama.cpp's tests/test-tokenizer-0.cpp (*.inp): texts
// separated by "\n__ggml_vocab_test__\n", read the same way (a text is everything between two
// separators, so a trailing separator ends the last text and adds no empty one). For every text,
// in file order, one line on stdout: the token ids from llama_tokenize(add_special = false,
// parse_special = false), separated by spaces (an empty line for no tokens). The number of
// texts goes to stderr.
#include <llama.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_WARN)
    fputs(text, stderr);
}

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 1 << 16, n = 0;
  char* buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) {
      cap *= 2;
      char* grown = realloc(buf, cap);
      if (!grown)
        free(buf);
      buf = grown;
    }
  }
  fclose(f);
  *size = n;
  return buf;
}

// memmem is a GNU extension; the separator search is all we need.
static const char* find(const char* hay, size_t n, const char* needle, size_t m) {
  for (size_t i = 0; i + m <= n; ++i)
    if (memcmp(hay + i, needle, m) == 0)
      return hay + i;
  return NULL;
}

static int tokenize_one(const struct llama_vocab* vocab, const char* text, int len) {
  int cap = len + 16;
  llama_token* ids = malloc(sizeof(llama_token) * (size_t)cap);
  int n = llama_tokenize(vocab, text, len, ids, cap, false, false);
  if (n < 0) { // too small: -n is the size needed
    cap = -n;
    free(ids);
    ids = malloc(sizeof(llama_token) * (size_t)cap);
    n = llama_tokenize(vocab, text, len, ids, cap, false, false);
  }
  if (n < 0) {
    free(ids);
    return -1;
  }
  for (int i = 0; i < n; ++i)
    printf(i ? " %d" : "%d", ids[i]);
  putchar('\n');
  free(ids);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s VOCAB.gguf INPUTS\n", argv[0]);
    return 2;
  }
  llama_log_set(quiet_log, NULL);
  llama_backend_init();

  struct llama_model_params mp = llama_model_default_params();
  mp.vocab_only = true;
  struct llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "cannot load %s\n", argv[1]);
    return 1;
  }
  const struct llama_vocab* vocab = llama_model_get_vocab(model);

  size_t size = 0;
  char* raw = read_file(argv[2], &size);
  if (!raw) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    return 1;
  }
  static const char sep[] = "\n__ggml_vocab_test__\n";
  const size_t sep_len = sizeof sep - 1;
  int count = 0;
  for (size_t pos = 0; pos < size;) {
    const char* next = find(raw + pos, size - pos, sep, sep_len);
    const size_t len = next ? (size_t)(next - (raw + pos)) : size - pos;
    if (tokenize_one(vocab, raw + pos, (int)len) != 0) {
      fprintf(stderr, "llama_tokenize failed on text %d\n", count);
      return 1;
    }
    ++count;
    if (!next)
      break;
    pos += len + sep_len;
  }
  fprintf(stderr, "texts %d\n", count);
  free(raw);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
