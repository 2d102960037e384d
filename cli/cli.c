#include "cli.h"

#include "api.h"
#include "args.h"
#include "chat.h"
#include "clock.h"
#include "credentials.h"
#include "errors.h"
#include "llm_format.h"
#include "protocol.h"
#include "usage_format.h"
#include "version.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_id {
    OPT_SERVER,
    OPT_TOKEN,
    OPT_HELP,
    OPT_VERSION,
    OPT_OUTPUT,
    OPT_MESSAGE,
    OPT_SYSTEM,
    OPT_NO_STREAM,
    OPT_TEMPERATURE,
    OPT_MAX_TOKENS,
    OPT_NO_VERIFY,
    OPT_CACERT,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_LLM,
    OPT_OWNER,
};

#define GLOBAL_OPTS                                                                                \
    {"server", 0, true, OPT_SERVER}, {"token", 0, true, OPT_TOKEN},                                \
    {                                                                                              \
        "help", 'h', false, OPT_HELP                                                               \
    }

static const struct cli_opt global_opts[] = {GLOBAL_OPTS, {"version", 0, false, OPT_VERSION}};
static const struct cli_opt get_opts[] = {
    GLOBAL_OPTS,
    {"output", 'o', true, OPT_OUTPUT},
    {"since", 0, true, OPT_SINCE},
    {"until", 0, true, OPT_UNTIL},
    {"llm", 0, true, OPT_LLM},
    {"owner", 0, true, OPT_OWNER},
};
static const struct cli_opt describe_opts[] = {GLOBAL_OPTS, {"output", 'o', true, OPT_OUTPUT}};
static const struct cli_opt chat_opts_spec[] = {
    GLOBAL_OPTS,
    {"message", 'm', true, OPT_MESSAGE},
    {"system", 0, true, OPT_SYSTEM},
    {"no-stream", 0, false, OPT_NO_STREAM},
    {"temperature", 0, true, OPT_TEMPERATURE},
    {"max-tokens", 0, true, OPT_MAX_TOKENS},
};
static const struct cli_opt login_opts[] = {
    GLOBAL_OPTS,
    {"no-verify", 0, false, OPT_NO_VERIFY},
    {"cacert", 0, true, OPT_CACERT},
};
static const struct cli_opt plain_opts[] = {GLOBAL_OPTS};

/* What every command gets. */
struct ctx {
    const struct cli_args *global; /* options before the command */
    const struct cli_args *args;   /* the command's own arguments */
    FILE *in, *out, *errf;
    struct cli_error *err;
};

/* An option given after the command wins over one given before it. */
static const char *opt_value(const struct ctx *c, int id)
{
    const char *v = cli_args_get(c->args, id);
    return v ? v : cli_args_get(c->global, id);
}

/* ---- help ---- */

static const char usage_main[] =
    "mcpctl - see and use the Llms published through mcpd\n"
    "\n"
    "Usage: mcpctl [--server URL] [--token TOKEN] COMMAND [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  get llm [NAME] [-o FORMAT]           list the Llms, or show one; FORMAT is\n"
    "                                       table (default), wide, json or yaml\n"
    "  get usage [--since D] [--until D]    requests and tokens per day, owner and Llm\n"
    "        [--llm NAME] [--owner NAME] [-o FORMAT]\n"
    "  describe llm NAME [-o json|yaml]     show every field of one Llm (or a pool)\n"
    "  chat-llm NAME [-m MESSAGE] ...       chat with an Llm\n"
    "  login --server URL --token TOKEN     save the server and token for later commands\n"
    "        [--cacert FILE]                (and the CA that signed mcpd's certificate)\n"
    "  help [COMMAND]                       show the help of a command\n"
    "  version                              show mcpctl's version\n"
    "\n"
    "Global options (allowed before or after the command):\n"
    "  --server URL    mcpd's URL; else $MCPCTL_URL, else the credentials file\n"
    "  --token TOKEN   API token; else $MCPCTL_TOKEN, else the credentials file\n"
    "  -h, --help      show help\n"
    "  --version       show mcpctl's version\n"
    "\n"
    "The credentials file is $MCPCTL_HOME/credentials, else ~/.mcpctl/credentials\n"
    "(JSON: {\"mcpdUrl\": \"...\", \"token\": \"...\", \"caFile\": \"...\"}), shared with\n"
    "mcplocal. For https:// servers, the CA in $MCPCTL_CACERT, else the file's\n"
    "caFile, is trusted besides the system's CAs.\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  other error (unexpected answer from mcpd, local file error)\n"
    "  2  bad usage or missing configuration (no server URL or token)\n"
    "  3  mcpd unreachable, or the connection was lost\n"
    "  4  token rejected (401/403)\n"
    "  5  no Llm by that name (404)\n"
    "  6  Llm unavailable: its publisher is offline or asleep (503)\n"
    "  7  inference failed or timed out (502/504, error in the stream)\n";

static const char usage_get[] =
    "Usage: mcpctl get llm [NAME] [-o table|wide|json|yaml]\n"
    "       mcpctl get usage [--since DATE] [--until DATE] [--llm NAME] [--owner NAME]\n"
    "                        [-o table|wide|json|yaml]\n"
    "\n"
    "get llm lists the Llms mcpd knows (sorted by name), or shows the one named\n"
    "NAME.\n"
    "\n"
    "get usage shows the requests relayed, those that failed, and the prompt and\n"
    "completion tokens the backends reported, per UTC day, owner and Llm. A\n"
    "token sees its own owner's usage; an admin token sees everyone's.\n"
    "\n"
    "Options:\n"
    "  -o, --output FORMAT  table (default): NAME KIND STATUS TYPE MODEL TIER POOL AGE;\n"
    "                         for usage DAY OWNER LLM REQUESTS ERRORS PROMPT-TOKENS\n"
    "                         COMPLETION-TOKENS and a TOTAL line\n"
    "                       wide: the table plus OWNER and LAST-HEARTBEAT (the time\n"
    "                         since the last heartbeat, \"-\" when there is none);\n"
    "                         for usage, plus TOTAL-TOKENS\n"
    "                       json: the API's objects\n"
    "                       yaml: the same as YAML\n"
    "  --since DATE         usage from this UTC day on (YYYY-MM-DD or an RFC 3339 time)\n"
    "  --until DATE         usage up to this UTC day, included\n"
    "  --llm NAME           usage of this Llm only\n"
    "  --owner NAME         usage of this owner only (another owner's needs an admin\n"
    "                       token)\n";

static const char usage_describe[] =
    "Usage: mcpctl describe llm NAME [-o json|yaml]\n"
    "\n"
    "Shows every field of the Llm named NAME: kind, status, model, owner, pool,\n"
    "last heartbeat and inactive-since times with their age, the provider\n"
    "session (when it is yours) and the extra configuration; for a member of a\n"
    "pool, the other members too. NAME may also be a pool's name: then the\n"
    "pool, with every member.\n"
    "\n"
    "Options:\n"
    "  -o, --output FORMAT  (default: the description above)\n"
    "                       json: the API's object\n"
    "                       yaml: the same as YAML\n";

static const char usage_chat[] =
    "Usage: mcpctl chat-llm NAME [-m MESSAGE] [--system TEXT] [--no-stream]\n"
    "                       [--temperature X] [--max-tokens N]\n"
    "\n"
    "Chats with the Llm named NAME. With -m, sends one message and prints the\n"
    "answer. Without it, reads one message per line from standard input and\n"
    "keeps the conversation's history across turns; an empty line is skipped,\n"
    "'/exit', '/quit' or end of input ends it. An unavailable Llm or a failed\n"
    "answer is reported and the conversation goes on (the exit code is that of\n"
    "the last turn); other errors end it.\n"
    "\n"
    "Options:\n"
    "  -m, --message MESSAGE  send this one message\n"
    "  --system TEXT          system prompt for the conversation\n"
    "  --no-stream            print the whole answer when it is complete, instead\n"
    "                         of token by token as it arrives\n"
    "  --temperature X        sampling temperature (a number, 0 or more)\n"
    "  --max-tokens N         longest answer, in tokens\n";

static const char usage_login[] =
    "Usage: mcpctl login --server URL --token TOKEN [--cacert FILE] [--no-verify]\n"
    "\n"
    "Checks that mcpd at URL accepts TOKEN, then saves both in the credentials\n"
    "file ($MCPCTL_HOME/credentials, else ~/.mcpctl/credentials) with mode 0600,\n"
    "keeping any other keys in it. Later commands use them without flags.\n"
    "\n"
    "Options:\n"
    "  --server URL    mcpd's URL, e.g. https://mcpd.example\n"
    "  --token TOKEN   an API token from 'mcpd token create'\n"
    "  --cacert FILE   the CA (PEM) that signed mcpd's TLS certificate, when it is\n"
    "                  a private one: checked, then saved as caFile (absolute\n"
    "                  path) and trusted besides the system's CAs from now on\n"
    "  --no-verify     save without contacting mcpd\n";

static const char usage_help[] = "Usage: mcpctl help [COMMAND]\n";
static const char usage_version[] = "Usage: mcpctl version\n";

/* ---- shared steps ---- */

static int usage_error(struct ctx *c, const char *cmd, const char *what)
{
    return cli_error_set(c->err, CLI_EXIT_USAGE, "%s; run 'mcpctl %s --help' for usage", what, cmd);
}

/* The resource argument of get/describe: "llm" or "llms", and for get
 * "usage" too (*usage is then set). */
static int check_resource(struct ctx *c, const char *cmd, bool *usage)
{
    if (c->args->npos == 0)
        return usage_error(c, cmd, "missing the resource type, e.g. 'llm'");
    const char *r = c->args->pos[0];
    bool is_usage = usage && strcmp(r, "usage") == 0;
    if (usage)
        *usage = is_usage;
    if (!is_usage && strcmp(r, "llm") != 0 && strcmp(r, "llms") != 0) {
        char what[256];
        snprintf(what, sizeof what, "unknown resource type '%.100s' (known: llm%s)", r,
                 usage ? ", usage" : "");
        return usage_error(c, cmd, what);
    }
    return 0;
}

static int check_name(struct ctx *c, const char *cmd, const char *name)
{
    if (mcp_name_valid(name))
        return 0;
    char what[300];
    snprintf(what, sizeof what,
             "invalid Llm name '%.120s': use 1-%d letters, digits, '.', '_' or '-', starting "
             "with a letter or digit",
             name, MCP_NAME_MAX);
    return usage_error(c, cmd, what);
}

/* Resolves the credentials and makes a client. */
static int connect_api(struct ctx *c, struct api **out)
{
    struct creds_sources src = {0};
    struct creds creds;
    creds_sources_from_env(&src);
    src.flag_url = opt_value(c, OPT_SERVER);
    src.flag_token = opt_value(c, OPT_TOKEN);
    *out = NULL;
    int rc = creds_resolve(&src, true, true, &creds, c->err);
    if (rc == 0) {
        *out = api_new(creds.url, creds.token, creds.token_from);
        if (!*out || api_set_cafile(*out, creds.cafile, creds.cafile_from) < 0)
            rc = cli_error_set(c->err, CLI_EXIT_ERROR, "out of memory");
    }
    creds_release(&creds);
    return rc;
}

/* ---- commands ---- */

/* Shows what a get fetched (rc: how fetching went): for the tables,
 * "nothing" on stderr when empty; else v written in fmt by write. */
static int show(struct ctx *c, int rc, enum llm_output fmt, const json_t *v, bool empty,
                const char *nothing, int (*write)(enum llm_output fmt, const json_t *v, FILE *out))
{
    if (rc < 0)
        return -1;
    if ((fmt == LLM_OUTPUT_TABLE || fmt == LLM_OUTPUT_WIDE) && empty) {
        fprintf(c->errf, "%s\n", nothing);
        return 0;
    }
    if (write(fmt, v, c->out) < 0)
        return cli_error_set(c->err, CLI_EXIT_ERROR, "cannot write the output");
    return 0;
}

static int write_llms(enum llm_output fmt, const json_t *v, FILE *out)
{
    return llm_format_write(fmt, v, clock_wall_ms(), out);
}

/* get usage: the counts, with the filters given. */
static int get_usage(struct ctx *c, enum llm_output fmt)
{
    if (c->args->npos > 1)
        return usage_error(c, "get", "too many arguments (filter with --llm and --owner)");
    struct api_usage_query q = {
        .since = cli_args_get(c->args, OPT_SINCE),
        .until = cli_args_get(c->args, OPT_UNTIL),
        .llm = cli_args_get(c->args, OPT_LLM),
        .owner = cli_args_get(c->args, OPT_OWNER),
    };
    if (q.llm && check_name(c, "get", q.llm) < 0)
        return -1;
    struct api *a = NULL;
    json_t *v = NULL;
    int rc = connect_api(c, &a);
    if (rc == 0)
        rc = api_get_usage(a, &q, &v, c->err);
    rc = show(c, rc, fmt, v, json_array_size(json_object_get(v, "usage")) == 0, "no usage found",
              usage_format_write);
    json_decref(v);
    api_free(a);
    return rc;
}

static int cmd_get(struct ctx *c)
{
    enum llm_output fmt = LLM_OUTPUT_TABLE;
    const char *o = cli_args_get(c->args, OPT_OUTPUT);
    bool usage;
    if (check_resource(c, "get", &usage) < 0)
        return -1;
    if (o && llm_output_parse(o, &fmt) < 0) {
        char what[200];
        snprintf(what, sizeof what,
                 "unknown output format '%.100s' (use table, wide, json or yaml)", o);
        return usage_error(c, "get", what);
    }
    if (usage)
        return get_usage(c, fmt);
    if (cli_args_has(c->args, OPT_SINCE) || cli_args_has(c->args, OPT_UNTIL) ||
        cli_args_has(c->args, OPT_LLM) || cli_args_has(c->args, OPT_OWNER))
        return usage_error(c, "get", "--since, --until, --llm and --owner are for 'get usage'");
    if (c->args->npos > 2)
        return usage_error(c, "get", "too many arguments");
    const char *name = c->args->npos == 2 ? c->args->pos[1] : NULL;
    if (name && check_name(c, "get", name) < 0)
        return -1;

    struct api *a = NULL;
    json_t *v = NULL;
    int rc = connect_api(c, &a);
    if (rc == 0)
        rc = name ? api_get_llm(a, name, &v, c->err) : api_list_llms(a, &v, c->err);
    rc = show(c, rc, fmt, v, json_is_array(v) && json_array_size(v) == 0, "no Llms found",
              write_llms);
    json_decref(v);
    api_free(a);
    return rc;
}

static int cmd_describe(struct ctx *c)
{
    enum llm_output fmt = LLM_OUTPUT_TABLE;
    const char *o = cli_args_get(c->args, OPT_OUTPUT);
    if (check_resource(c, "describe", NULL) < 0)
        return -1;
    if (c->args->npos < 2)
        return usage_error(c, "describe", "missing the Llm's name");
    if (c->args->npos > 2)
        return usage_error(c, "describe", "too many arguments");
    if (o &&
        (llm_output_parse(o, &fmt) < 0 || (fmt != LLM_OUTPUT_JSON && fmt != LLM_OUTPUT_YAML))) {
        char what[200];
        snprintf(what, sizeof what, "unknown output format '%.100s' (use json or yaml)", o);
        return usage_error(c, "describe", what);
    }
    const char *name = c->args->pos[1];
    if (check_name(c, "describe", name) < 0)
        return -1;

    struct api *a = NULL;
    json_t *v = NULL, *pool = NULL;
    int rc = -1, wrc = 0;
    int64_t now = clock_wall_ms();
    if (connect_api(c, &a) < 0)
        goto out;
    if (api_get_llm(a, name, &v, c->err) < 0) {
        /* No Llm of that name: a pool may have it. The Llm's 404 stands
         * when it is not one either. */
        struct cli_error perr = {0};
        if (c->err->code != CLI_EXIT_NOT_FOUND || api_get_members(a, name, &pool, &perr) < 0)
            goto out;
        cli_error_clear(c->err);
        wrc = fmt == LLM_OUTPUT_JSON || fmt == LLM_OUTPUT_YAML
                  ? llm_format_write(fmt, pool, now, c->out)
                  : llm_format_pool(pool, NULL, now, c->out);
    } else {
        wrc = llm_format_describe_as(fmt, v, now, c->out);
        /* A member's siblings, when mcpd can list them. */
        const char *pool_name = json_string_value(json_object_get(v, "poolName"));
        struct cli_error perr = {0};
        if (wrc == 0 && pool_name && fmt != LLM_OUTPUT_JSON && fmt != LLM_OUTPUT_YAML &&
            api_get_members(a, name, &pool, &perr) == 0)
            wrc = llm_format_pool(pool, name, now, c->out);
    }
    if (wrc < 0) {
        cli_error_set(c->err, CLI_EXIT_ERROR, "cannot write the output");
        goto out;
    }
    rc = 0;
out:
    json_decref(v);
    json_decref(pool);
    api_free(a);
    return rc;
}

static int chat_options(struct ctx *c, struct chat_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stream = !cli_args_has(c->args, OPT_NO_STREAM);
    o->system = cli_args_get(c->args, OPT_SYSTEM);
    const char *t = cli_args_get(c->args, OPT_TEMPERATURE);
    const char *m = cli_args_get(c->args, OPT_MAX_TOKENS);
    char what[200];
    if (t) {
        if (cli_parse_double(t, &o->temperature) < 0 || o->temperature < 0) {
            snprintf(what, sizeof what, "'--temperature' needs a number of 0 or more, got '%.100s'",
                     t);
            return usage_error(c, "chat-llm", what);
        }
        o->has_temperature = true;
    }
    if (m) {
        if (cli_parse_long(m, 1, 2147483647L, &o->max_tokens) < 0) {
            snprintf(what, sizeof what,
                     "'--max-tokens' needs a whole number of 1 or more, "
                     "got '%.100s'",
                     m);
            return usage_error(c, "chat-llm", what);
        }
        o->has_max_tokens = true;
    }
    return 0;
}

/* Errors after which a conversation may go on: the next turn can succeed. */
static int retryable(int code)
{
    return code == CLI_EXIT_UNAVAILABLE || code == CLI_EXIT_INFER;
}

static void report(FILE *errf, const struct cli_error *err)
{
    fprintf(errf, "mcpctl: %s\n", err->msg[0] ? err->msg : "unknown error");
    fflush(errf);
}

static int converse(struct ctx *c, struct chat *chat, struct api *a, const char *name)
{
    char *line = NULL;
    size_t cap = 0;
    int last = CLI_EXIT_OK;
    int rc = 0;
    bool prompt = isatty(fileno(c->in));
    if (prompt)
        fprintf(c->errf, "chatting with Llm '%s': one message per line; /exit or Ctrl-D ends\n",
                name);
    for (;;) {
        if (prompt) {
            fputs("> ", c->errf);
            fflush(c->errf);
        }
        ssize_t n = getline(&line, &cap, c->in);
        if (n < 0)
            break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0)
            break;
        if (n > CLI_LINE_MAX) {
            cli_error_set(c->err, CLI_EXIT_USAGE, "message of %zd bytes is longer than %d; skipped",
                          n, CLI_LINE_MAX);
            report(c->errf, c->err);
            last = CLI_EXIT_USAGE;
            continue;
        }
        cli_error_clear(c->err);
        if (chat_turn(chat, a, name, line, c->out, c->err) == 0) {
            last = CLI_EXIT_OK;
            continue;
        }
        if (!retryable(c->err->code) && c->err->code != CLI_EXIT_USAGE) {
            rc = -1; /* reported by cli_main */
            goto out;
        }
        report(c->errf, c->err);
        last = c->err->code;
    }
    cli_error_clear(c->err);
    if (last != CLI_EXIT_OK) {
        /* Already reported; only the exit code is left to give. */
        c->err->code = last;
        c->err->msg[0] = '\0';
        rc = -1;
    }
out:
    free(line);
    return rc;
}

static int cmd_chat(struct ctx *c)
{
    if (c->args->npos == 0)
        return usage_error(c, "chat-llm", "missing the Llm's name");
    if (c->args->npos > 1)
        return usage_error(c, "chat-llm",
                           "too many arguments (quote a message with spaces: -m \"...\")");
    const char *name = c->args->pos[0];
    if (check_name(c, "chat-llm", name) < 0)
        return -1;
    struct chat_opts o;
    if (chat_options(c, &o) < 0)
        return -1;
    const char *msg = cli_args_get(c->args, OPT_MESSAGE);
    if (msg && !*msg)
        return usage_error(c, "chat-llm", "'-m' needs a non-empty message");

    struct api *a = NULL;
    struct chat chat = {0};
    int rc = -1;
    if (chat_init(&chat, &o, c->err) < 0)
        return -1;
    if (connect_api(c, &a) < 0)
        goto out;
    rc = msg ? chat_turn(&chat, a, name, msg, c->out, c->err) : converse(c, &chat, a, name);
out:
    chat_release(&chat);
    api_free(a);
    return rc;
}

static int cmd_login(struct ctx *c)
{
    if (c->args->npos > 0)
        return usage_error(c, "login",
                           "login takes no arguments, only --server, --token and --cacert");
    const char *url_in = opt_value(c, OPT_SERVER);
    const char *token = opt_value(c, OPT_TOKEN);
    const char *cacert = cli_args_get(c->args, OPT_CACERT);
    if (!url_in || !*url_in || !token || !*token)
        return usage_error(c, "login", "login needs both --server URL and --token TOKEN");
    if (cacert && !*cacert)
        return usage_error(c, "login", "'--cacert' needs a file, got an empty value");

    struct creds_sources src = {0};
    struct creds creds = {0};
    creds_sources_from_env(&src);
    char *path = creds_file_path(&src);
    char *cafile = NULL;
    struct api *a = NULL;
    json_t *list = NULL;
    int rc = -1;
    if (!path) {
        cli_error_set(c->err, CLI_EXIT_USAGE,
                      "cannot tell where to save the credentials: set MCPCTL_HOME or HOME");
        goto out;
    }
    /* The file keeps the CA's absolute path: later commands run from
     * anywhere. It is checked whatever the URL, as it is being saved. */
    if (cacert && (creds_absolute_path(cacert, &cafile, c->err) < 0 ||
                   creds_check_cafile(cafile, "--cacert", c->err) < 0))
        goto out;
    /* The URL and token are the flags; the CA for the check is --cacert,
     * else MCPCTL_CACERT, else the caFile the file keeps. */
    src.flag_url = url_in;
    src.flag_token = token;
    src.flag_cacert = cafile;
    if (creds_resolve(&src, true, true, &creds, c->err) < 0)
        goto out;
    if (!cli_args_has(c->args, OPT_NO_VERIFY)) {
        a = api_new(creds.url, creds.token, "--token");
        if (!a || api_set_cafile(a, creds.cafile, creds.cafile_from) < 0) {
            cli_error_set(c->err, CLI_EXIT_ERROR, "out of memory");
            goto out;
        }
        if (api_list_llms(a, &list, c->err) < 0)
            goto out;
    }
    if (creds_save(path, creds.url, creds.token, cafile, c->err) < 0)
        goto out;
    if (cafile)
        fprintf(c->out, "saved the credentials for %s in %s, trusting the CA in %s\n", creds.url,
                path, cafile);
    else
        fprintf(c->out, "saved the credentials for %s in %s\n", creds.url, path);
    rc = 0;
out:
    json_decref(list);
    api_free(a);
    creds_release(&creds);
    free(cafile);
    free(path);
    return rc;
}

static int cmd_version(struct ctx *c)
{
    fprintf(c->out, "mcpctl %s\n", mcpctl_version());
    return 0;
}

static int cmd_help(struct ctx *c);

struct command {
    const char *name;
    int (*run)(struct ctx *c);
    const struct cli_opt *opts;
    size_t nopts;
    const char *usage;
};

#define OPTS(a) a, sizeof a / sizeof a[0]
static const struct command commands[] = {
    {"get", cmd_get, OPTS(get_opts), usage_get},
    {"describe", cmd_describe, OPTS(describe_opts), usage_describe},
    {"chat-llm", cmd_chat, OPTS(chat_opts_spec), usage_chat},
    {"login", cmd_login, OPTS(login_opts), usage_login},
    {"help", cmd_help, OPTS(plain_opts), usage_help},
    {"version", cmd_version, OPTS(plain_opts), usage_version},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int cmd_help(struct ctx *c)
{
    if (c->args->npos == 0) {
        fputs(usage_main, c->out);
        return 0;
    }
    const struct command *cmd = find_command(c->args->pos[0]);
    if (!cmd || c->args->npos > 1) {
        char what[200];
        snprintf(what, sizeof what, "unknown command '%.100s'", c->args->pos[0]);
        return c->args->npos > 1 ? usage_error(c, "help", "too many arguments")
                                 : usage_error(c, "help", what);
    }
    fputs(cmd->usage, c->out);
    return 0;
}

/* True when -h or --help comes before any "--" in argv. */
static bool asks_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return false;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return true;
    }
    return false;
}

static int run(int argc, char **argv, struct ctx *c)
{
    struct cli_args global, args;
    c->global = &global;
    c->args = &args;
    memset(&args, 0, sizeof args);
    if (cli_args_parse(argc - 1, argv + 1, OPTS(global_opts), "mcpctl", true, &global, c->err) < 0)
        return -1;
    if (cli_args_has(&global, OPT_VERSION))
        return cmd_version(c);
    int at = 1 + global.stopped_at;
    if (at >= argc) {
        if (cli_args_has(&global, OPT_HELP)) {
            fputs(usage_main, c->out);
            return 0;
        }
        return cli_error_set(c->err, CLI_EXIT_USAGE,
                             "missing command; run 'mcpctl --help' for usage");
    }
    const struct command *cmd = find_command(argv[at]);
    if (!cmd) {
        if (cli_args_has(&global, OPT_HELP)) {
            fputs(usage_main, c->out);
            return 0;
        }
        return cli_error_set(c->err, CLI_EXIT_USAGE,
                             "unknown command '%.100s'; run 'mcpctl --help' for usage", argv[at]);
    }
    char ctxname[64];
    snprintf(ctxname, sizeof ctxname, "mcpctl %s", cmd->name);
    if (cli_args_parse(argc - at - 1, argv + at + 1, cmd->opts, cmd->nopts, ctxname, false, &args,
                       c->err) < 0) {
        /* "mcpctl get --help --bogus" still shows the help. */
        if (cli_args_has(&global, OPT_HELP) || asks_help(argc - at - 1, argv + at + 1)) {
            fputs(cmd->usage, c->out);
            return 0;
        }
        return -1;
    }
    if (cli_args_has(&global, OPT_HELP) || cli_args_has(&args, OPT_HELP)) {
        fputs(cmd->usage, c->out);
        return 0;
    }
    return cmd->run(c);
}

int cli_main(int argc, char **argv, FILE *in, FILE *out, FILE *errf)
{
    struct cli_error err = {0};
    struct ctx c = {.in = in, .out = out, .errf = errf, .err = &err};
    int rc = run(argc, argv, &c);
    if (fflush(out) != 0 && rc == 0)
        rc =
            cli_error_set(&err, CLI_EXIT_ERROR, "cannot write the output: %s", cli_strerror(errno));
    if (rc == 0)
        return CLI_EXIT_OK;
    if (err.msg[0])
        report(errf, &err);
    return err.code != CLI_EXIT_OK ? err.code : CLI_EXIT_ERROR;
}
