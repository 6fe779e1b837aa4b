// Blocking work (libssh connection tests, filesystem checks) runs on nginx's
// default thread pool, never on the event loop. The request is held with
// r->main->blocked while the task runs, as the copy filter does for aio.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/host_key.h"

#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <sys/stat.h>

namespace {

struct ThreadJob {
    ngx_http_request_t *r;
    std::function<void()> work;
    std::function<void()> done;
};

void job_run(void *data, ngx_log_t *log) {
    auto *job = *static_cast<ThreadJob **>(data);
    try {
        job->work();
    } catch (...) {
        // work() reports through its own result; nothing may escape a thread
    }
}

void job_done(ngx_event_t *ev) {
    auto *job = static_cast<ThreadJob *>(ev->data);
    ngx_http_request_t *r = job->r;
    ngx_connection_t *c = r->connection;
    r->main->blocked--;
    r->aio = 0;
    auto done = std::move(job->done);
    delete job;
    done();
    ngx_http_run_posted_requests(c);
}

// Hardened servers drop the sftp subsystem but still run commands: the
// workspace is then checked with lib's `test -d '<path>'` on an exec
// channel. Exit status 0 = a directory, 1 = not; -1 = could not run it.
int exec_status(ssh_session s, const std::string &command, int timeout_ms) {
    ssh_channel ch = ssh_channel_new(s);
    if (ch == nullptr) return -1;
    int status = -1;
    if (ssh_channel_open_session(ch) == SSH_OK &&
        ssh_channel_request_exec(ch, command.c_str()) == SSH_OK) {
        // `test` prints nothing: read to EOF (bounded), then the exit
        // status, which libssh waits for within the session timeout.
        char buf[256];
        for (int i = 0; i < 64; i++)
            if (ssh_channel_read_timeout(ch, buf, sizeof(buf), 0, timeout_ms) <= 0) break;
        status = ssh_channel_get_exit_status(ch);
        ssh_channel_send_eof(ch);
        ssh_channel_close(ch);
    }
    ssh_channel_free(ch);
    return status;
}

// "sftp" / "exec" when the check ran (then *is_dir holds the answer), "" when
// neither channel kind is available.
const char *check_workspace(ssh_session s, const byok::admin::ProbeCall &in, bool *is_dir) {
    sftp_session sftp = sftp_new(s);
    if (sftp != nullptr && sftp_init(sftp) == SSH_OK) {
        sftp_attributes st = sftp_stat(sftp, in.workspace_path.c_str());
        *is_dir = st != nullptr && st->type == SSH_FILEXFER_TYPE_DIRECTORY;
        if (st) sftp_attributes_free(st);
        sftp_free(sftp);
        return "sftp";
    }
    if (sftp) sftp_free(sftp);
    int status = exec_status(s, in.workspace_exec, in.timeout_ms);
    if (status != 0 && status != 1) return "";
    *is_dir = status == 0;
    return "exec";
}

}  // namespace

ngx_int_t ngx_byok_run_in_thread(ngx_http_request_t *r, std::function<void()> work,
                                 std::function<void()> done) {
    static ngx_str_t name = ngx_string("default");
    ngx_thread_pool_t *tp = ngx_thread_pool_get((ngx_cycle_t *)ngx_cycle, &name);
    if (tp == nullptr) return NGX_ERROR;
    ngx_thread_task_t *task = ngx_thread_task_alloc(r->pool, sizeof(ThreadJob *));
    if (task == nullptr) return NGX_ERROR;
    auto *job = new (std::nothrow) ThreadJob{r, std::move(work), std::move(done)};
    if (job == nullptr) return NGX_ERROR;
    *static_cast<ThreadJob **>(task->ctx) = job;
    task->handler = job_run;
    task->event.data = job;
    task->event.handler = job_done;
    if (ngx_thread_task_post(tp, task) != NGX_OK) {
        delete job;
        return NGX_ERROR;
    }
    r->main->blocked++;
    r->aio = 1;
    return NGX_OK;
}

void ngx_byok_ssh_probe(const byok::admin::ProbeCall &in, const std::string &address,
                        byok::admin::ProbeResult *out) {
    int64_t started = ngx_byok_monotonic_ms();
    auto finish = [&](bool ok, const char *stage, std::string message) {
        out->ok = ok;
        out->stage = stage;
        out->message = std::move(message);
        out->latency_ms = ngx_byok_monotonic_ms() - started;
    };
    ssh_session s = ssh_new();
    if (s == nullptr) return finish(false, "connect", "cannot allocate an ssh session");
    long timeout = ngx_max(1, (in.timeout_ms + 999) / 1000);
    int port = in.port;
    int strict = 0;
    // A checked address when the host was chosen by a tenant: libssh must
    // not resolve the name again (it could answer differently).
    ssh_options_set(s, SSH_OPTIONS_HOST, address.empty() ? in.host.c_str() : address.c_str());
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
    ssh_options_set(s, SSH_OPTIONS_USER, in.username.c_str());
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout);
    ssh_options_set(s, SSH_OPTIONS_STRICTHOSTKEYCHECK, &strict);
    ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &strict);

    struct Guard {
        ssh_session s;
        ~Guard() {
            if (ssh_is_connected(s)) ssh_disconnect(s);
            ssh_free(s);
        }
    } guard{s};

    if (ssh_connect(s) != SSH_OK) return finish(false, "connect", ssh_get_error(s));

    ssh_key host_key = nullptr;
    unsigned char *hash = nullptr;
    size_t hlen = 0;
    if (ssh_get_server_publickey(s, &host_key) != SSH_OK ||
        ssh_get_publickey_hash(host_key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != 0) {
        if (host_key) ssh_key_free(host_key);
        return finish(false, "host_key", "cannot read the server's host key");
    }
    char *fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
    out->host_key_fingerprint = fp ? fp : "";
    ssh_string_free_char(fp);
    ssh_clean_pubkey_hash(&hash);
    ssh_key_free(host_key);
    if (in.host_key_fingerprint.empty()) {
        out->trusted_on_first_use = true;
    } else if (!byok::same_host_key(in.host_key_fingerprint, out->host_key_fingerprint)) {
        return finish(false, "host_key",
                      "host key changed: the key the server presented (host_key_fingerprint) "
                      "does not match the pinned fingerprint");
    }

    int rc;
    const char *secret = in.secret ? in.secret->data() : "";
    if (in.auth_method == "password") {
        rc = ssh_userauth_password(s, nullptr, secret);
    } else {
        ssh_key key = nullptr;
        if (ssh_pki_import_privkey_base64(secret, nullptr, nullptr, nullptr, &key) != SSH_OK)
            return finish(false, "auth", "the stored private key cannot be parsed");
        rc = ssh_userauth_publickey(s, nullptr, key);
        ssh_key_free(key);
    }
    if (rc != SSH_AUTH_SUCCESS)
        return finish(false, "auth", "authentication failed for user " + in.username);

    if (!in.workspace_path.empty()) {
        bool is_dir = false;
        out->workspace_check = check_workspace(s, in, &is_dir);
        if (out->workspace_check.empty())
            return finish(false, "workspace",
                          "neither sftp nor an exec channel is available to check the workspace");
        if (!is_dir)
            return finish(false, "workspace",
                          "workspace_path does not exist or is not a directory");
    }
    finish(true, "done", "connected, authenticated and found the workspace");
}

void ngx_byok_local_probe(const std::string &path, byok::admin::ProbeResult *out) {
    int64_t started = ngx_byok_monotonic_ms();
    struct stat st;
    bool ok = stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    out->ok = ok;
    out->stage = ok ? "done" : "workspace";
    out->message =
        ok ? "the path exists and is a directory" : "the path does not exist or is not a directory";
    out->latency_ms = ngx_byok_monotonic_ms() - started;
}

int64_t ngx_byok_monotonic_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
