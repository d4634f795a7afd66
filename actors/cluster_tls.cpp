// The cluster's certificates (thaw cluster init): a CA, and a certificate and key for the head
// and one for the nodes, each signed by the CA, made with OpenSSL's C API. CAF's OpenSSL module
// then runs the control connections over TLS and, given the CA file, accepts only peers whose
// certificate the CA signed (both directions).

#include "actors/cluster.hpp"

#include "actors/openssl_error_queue.hpp"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <unistd.h>

namespace thaw {
namespace {

// One owning pointer per OpenSSL type; their free functions take care of null.
struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct x509_free {
  void operator()(X509* p) const { X509_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

error ssl_error(const std::string& what) {
  return make_error(errc::internal, what + ": " + take_openssl_errors());
}

expected<pkey_ptr> make_key() {
  pkey_ptr key{EVP_RSA_gen(2048)};
  if (!key)
    return ssl_error("generating an RSA key");
  return key;
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr)
    return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/// A certificate for `key` named `cn`, signed by `ca_key` (self-signed when `ca` is null).
expected<x509_ptr> make_cert(EVP_PKEY* key, const std::string& cn, X509* ca, EVP_PKEY* ca_key,
                             long serial) {
  x509_ptr cert{X509_new()};
  if (!cert)
    return ssl_error("X509_new");
  X509_set_version(cert.get(), 2); // v3: extensions
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("thaw cluster"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), ca != nullptr ? X509_get_subject_name(ca) : name);
  X509* issuer = ca != nullptr ? ca : cert.get();
  const bool is_ca = ca == nullptr;
  const bool ok =
      add_ext(cert.get(), issuer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE") &&
      add_ext(cert.get(), issuer, NID_key_usage,
              is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment") &&
      add_ext(cert.get(), issuer, NID_subject_key_identifier, "hash") &&
      (is_ca || add_ext(cert.get(), issuer, NID_ext_key_usage, "serverAuth,clientAuth"));
  if (!ok)
    return ssl_error("certificate extensions for " + cn);
  if (X509_sign(cert.get(), ca_key, EVP_sha256()) == 0)
    return ssl_error("signing the certificate for " + cn);
  return cert;
}

/// Writes a PEM file that only its owner can read (keys) or anyone can (certificates).
template <class Write>
status write_pem(const std::filesystem::path& file, bool secret, Write&& write) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, secret ? 0600 : 0644);
  if (fd < 0)
    return make_error(errc::io_error, file.string() + ": " + std::strerror(errno));
  FILE* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return make_error(errc::io_error, file.string() + ": " + std::strerror(errno));
  }
  const bool ok = write(f) == 1;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed)
    return make_error(errc::io_error, file.string() + ": cannot write: " + take_openssl_errors());
  return {};
}

status write_pair(const std::filesystem::path& dir, const std::string& stem, EVP_PKEY* key,
                  X509* cert) {
  THAW_TRY(write_pem(dir / (stem + ".key"), true, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  }));
  return write_pem(dir / (stem + ".pem"), false, [&](FILE* f) { return PEM_write_X509(f, cert); });
}

} // namespace

status make_cluster_certificates(const std::filesystem::path& dir) {
  for (const char* name : {"ca.pem", "ca.key", "head.pem", "head.key", "node.pem", "node.key"})
    if (std::filesystem::exists(dir / name))
      return make_error(errc::already_exists, (dir / name).string() + ": already there");
  THAW_ASSIGN(auto ca_key, make_key());
  THAW_ASSIGN(auto ca, make_cert(ca_key.get(), "thaw cluster CA", nullptr, ca_key.get(), 1));
  THAW_ASSIGN(auto head_key, make_key());
  THAW_ASSIGN(auto head, make_cert(head_key.get(), "thaw head", ca.get(), ca_key.get(), 2));
  THAW_ASSIGN(auto node_key, make_key());
  THAW_ASSIGN(auto node, make_cert(node_key.get(), "thaw node", ca.get(), ca_key.get(), 3));
  // The CA's key stays with the operator (it signs more certificates); nodes need ca.pem and
  // node.{pem,key}, the head ca.pem and head.{pem,key}.
  THAW_TRY(write_pair(dir, "ca", ca_key.get(), ca.get()));
  THAW_TRY(write_pair(dir, "head", head_key.get(), head.get()));
  THAW_TRY(write_pair(dir, "node", node_key.get(), node.get()));
  return {};
}

} // namespace thaw
