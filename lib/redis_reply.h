// A Redis reply as the glue's Redis adapter hands it to lib/, and the one
// conversion of a hash reply into a map. Used by the admin API and the
// gateway alike, so it belongs to neither.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace byok {

// Unavailable = no connection, timeout or connection lost while waiting
// (the admin API answers 503, the gateway falls back to its cache).
struct Reply {
    enum class Type { Nil, Integer, String, Status, Error, Array, Unavailable };
    Type type = Type::Nil;
    long long integer = 0;
    std::string str;
    std::vector<Reply> elements;

    // No answer to use: Redis could not be asked or answered with an error.
    bool failed() const { return type == Type::Unavailable || type == Type::Error; }
};

// A Redis hash: field → value.
using FieldMap = std::map<std::string, std::string, std::less<>>;

// An HGETALL-style flat array {field, value, ...} as a map; Nil (a missing
// key, an absent script item) is the empty map. Throws Error("expected an
// array reply") for any other type. The one Redis reply → map conversion.
FieldMap to_fields(const Reply &r);

}  // namespace byok
