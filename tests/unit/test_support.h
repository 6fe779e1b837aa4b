// Helpers shared by the Criterion unit tests.
#pragma once

#include <string>

#include "lib/util.h"

namespace byok::test {

// The message of the byok::Error that f() throws, or "<no error>".
template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const Error &e) {
        return e.what();
    }
    return "<no error>";
}

}  // namespace byok::test
