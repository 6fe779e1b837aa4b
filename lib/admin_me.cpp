// GET /me: who the caller is, so a client (the console) shows only what it
// may call instead of probing routes for 403s.
#include "lib/admin_internal.h"

namespace byok::admin::detail {

Step whoami(const CtxPtr &c) {
    const Principal &who = c->who;
    if (who.admin) return respond(200, json{{"kind", "admin"}});
    return respond(200,
                   json{{"kind", "project"}, {"project", who.project}, {"scopes", who.scopes}});
}

}  // namespace byok::admin::detail
