#include "lib/redis_reply.h"

#include "lib/util.h"

namespace byok {

FieldMap to_fields(const Reply &r) {
    FieldMap f;
    if (r.type == Reply::Type::Nil) return f;
    if (r.type != Reply::Type::Array) throw Error("expected an array reply");
    for (size_t i = 0; i + 1 < r.elements.size(); i += 2)
        f[r.elements[i].str] = r.elements[i + 1].str;
    return f;
}

}  // namespace byok
