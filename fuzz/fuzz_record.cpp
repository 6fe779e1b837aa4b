// Key-record codec (lib/record.h): any input either throws byok::Error or
// parses into a record that serializes and parses back to the same record.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lib/record.h"

namespace {

bool same(const byok::KeyRecord &a, const byok::KeyRecord &b) {
    return a.sealed.v == b.sealed.v && a.sealed.kid == b.sealed.kid &&
           a.sealed.salt == b.sealed.salt && a.sealed.nonce == b.sealed.nonce &&
           a.sealed.ct == b.sealed.ct && a.label == b.label && a.endpoint == b.endpoint &&
           a.is_active == b.is_active && a.key_hint == b.key_hint && a.created_at == b.created_at &&
           a.updated_at == b.updated_at && a.last_tested == b.last_tested &&
           a.test_status == b.test_status && a.test_message == b.test_message;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    byok::KeyRecord rec;
    try {
        rec = byok::parse_key_record(in);
    } catch (const byok::Error &) {
        return 0;  // rejected cleanly
    }
    std::string out = byok::serialize_key_record(rec);
    byok::KeyRecord again;
    try {
        again = byok::parse_key_record(out);
    } catch (const byok::Error &) {
        abort();  // what we write must be readable
    }
    if (!same(rec, again)) abort();
    if (byok::serialize_key_record(again) != out) abort();
    return 0;
}
