// Uploads on the unified path (issue 17): which format a /v1 request body
// is read in, and the "model" field of a multipart/form-data body found
// without holding the body (audio and files go through untouched).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/body.h"
#include "lib/util.h"

namespace byok {

// The format of a /v1 body, from its Content-Type:
//   Multipart  multipart/form-data: the "model" form field
//   Json       application/json and */*+json; also no type, text/plain and
//              application/x-www-form-urlencoded, which curl -d and fetch
//              send for a string body (read as JSON, as always)
//   Opaque     any other type (audio/*, image/*, application/octet-stream,
//              ...): names no model; the body goes through untouched
BodyKind body_kind(std::string_view content_type);

// The boundary parameter of a multipart Content-Type (unquoted). Throws
// Error when it is missing or not 1..70 printable bytes (RFC 2046).
std::string multipart_boundary(std::string_view content_type);

// A bad request body; code is the API error code of the 400.
class BodyError : public Error {
  public:
    BodyError(std::string code_, const std::string &message)
        : Error(message), code(std::move(code_)) {}
    std::string code;
};

// Finds the "model" field (a part without filename) of a multipart body fed
// in pieces split anywhere; the result is the same for every split. Keeps
// only its state, the header block of the current part (at most 16 KiB) and
// the model value (at most 1 KiB) — never the bytes of a file. The body must
// be well formed up to its closing boundary; a second "model" field is an
// error, as in JSON. Throws Error from feed() or finish().
class MultipartScanner {
  public:
    explicit MultipartScanner(std::string_view boundary);
    void feed(std::string_view piece);
    std::optional<ModelSpan> finish();
    size_t offset() const { return offset_; }

  private:
    enum class St : uint8_t {
        Data,        // preamble or a part's content: looking for the delimiter
        AfterDelim,  // "--" closes, else padding and CRLF open a part
        CloseDash,   // second '-' of the close delimiter
        Padding,     // transport padding after the delimiter
        ExpectLf,    // '\n' ending the delimiter line
        Headers,     // a part's header block, up to the empty line
        Epilogue,    // after the close delimiter: ignored
    };

    size_t data(const char *p, size_t i, size_t n);
    void delimiter_found(size_t at);
    void headers_done();
    void keep(std::string_view bytes);

    std::string delim_;           // "\r\n--" boundary
    std::vector<uint16_t> fail_;  // KMP failure function of delim_
    size_t matched_ = 2;          // the body starts as if after a CRLF
    St st_ = St::Data;
    size_t offset_ = 0;      // of the current piece's first byte
    std::string headers_;    // header block of the current part
    size_t part_begin_ = 0;  // offset of its first header byte
    bool in_model_ = false;  // the current part is the model field
    std::optional<ModelSpan> model_;
};

// The scanner the gateway runs over a /v1 body: the format comes from the
// Content-Type (body_kind). Errors are BodyError: invalid_json or
// invalid_multipart.
class BodyScanner {
  public:
    explicit BodyScanner(std::string_view content_type);
    // `kind` is body_kind(content_type), already known (GatewayRequest).
    BodyScanner(BodyKind kind, std::string_view content_type);
    void feed(std::string_view piece);
    std::optional<ModelSpan> finish();
    size_t offset() const;
    BodyKind kind() const { return kind_; }
    // An opaque body is only counted: skip(n) stands for feeding n bytes.
    bool reads_bytes() const { return kind_ != BodyKind::Opaque; }
    void skip(size_t n);
    // JSON bodies: where `include_usage` may go (ModelScanner); none otherwise.
    StreamFacts stream_facts() const { return json_ ? json_->stream_facts() : StreamFacts{}; }

  private:
    BodyKind kind_;
    std::optional<ModelScanner> json_;
    std::optional<MultipartScanner> multipart_;
    size_t opaque_len_ = 0;  // bytes fed or skipped
};

}  // namespace byok
