/*
 * test_config_env: the settings' ways in besides the table: .env files follow the dotenv
 * convention and report a bad line by its number (and a file with one sets nothing), set only
 * unset variables, and .env.example copied as is changes nothing; `config --effective` says
 * where each value came from and never prints a secret. Fixture: configfx.
 */
#include "configfx.h"
#include "config.h"
#include "dotenv.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- .env ---- */

struct assigns {
    char text[2048]; /* "NAME=VALUE\n" for each assignment, in order */
    size_t calls;
};

static void collect(const char *name, const char *value, void *ctx)
{
    struct assigns *a = ctx;
    size_t used = strlen(a->text);
    snprintf(a->text + used, sizeof(a->text) - used, "%s=%s\n", name, value);
    a->calls++;
}

/* Parse a C-string .env text; returns the rc, a holds the assignments, err the reason. */
static int dotenv(const char *text, struct assigns *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    err[0] = '\0';
    return dotenv_parse(text, strlen(text), collect, a, err, errlen);
}

static void dotenv_skips_comments_and_blank_lines(void **state)
{
    (void)state;
    struct assigns a;
    char err[200];
    assert_int_equal(
        dotenv("# a comment\n\n   \n\t# indented comment\nA=1\n#B=2\n", &a, err, sizeof(err)), 0);
    assert_string_equal(a.text, "A=1\n");
    assert_int_equal(dotenv("", &a, err, sizeof(err)), 0);
    assert_int_equal(a.calls, 0);
    /* The last line needs no newline; CRLF line ends are accepted. */
    assert_int_equal(dotenv("A=1\r\nB=two words\r\nC=3", &a, err, sizeof(err)), 0);
    assert_string_equal(a.text, "A=1\nB=two words\nC=3\n");
}

static void dotenv_accepts_export_and_blanks_around_the_equal_sign(void **state)
{
    (void)state;
    struct assigns a;
    char err[200];
    assert_int_equal(dotenv("export A=1\nexport\tB=2\n  export   C = 3  \nD\t=\t4\nexportE=5\n", &a,
                            err, sizeof(err)),
                     0);
    assert_string_equal(a.text, "A=1\nB=2\nC=3\nD=4\nexportE=5\n");
    assert_int_equal(dotenv("_X=\nY_2=a=b=c\n", &a, err, sizeof(err)), 0);
    assert_string_equal(a.text, "_X=\nY_2=a=b=c\n");
}

static void dotenv_quotes_keep_the_value_verbatim(void **state)
{
    (void)state;
    struct assigns a;
    char err[200];
    assert_int_equal(dotenv("A=\"  spaced  \"\nB='has # hash'\nC=\"it's\"\nD='say \"hi\"'\n"
                            "E=\"\"\nF=''\nG=\"\\n stays\"\n",
                            &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.text, "A=  spaced  \nB=has # hash\nC=it's\nD=say \"hi\"\nE=\nF=\n"
                                "G=\\n stays\n");
}

static void dotenv_inline_comments_end_values(void **state)
{
    (void)state;
    struct assigns a;
    char err[200];
    assert_int_equal(dotenv("A=1 # one\nB=x\t# tab\nC=a#b\nD=\"q\" # after quotes\n"
                            "E='q'#tight\nF= # only a comment\nG=#\nH=\"#\"\n",
                            &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.text, "A=1\nB=x\nC=a#b\nD=q\nE=q\nF=\nG=\nH=#\n");
}

static void dotenv_bad_lines_are_reported_by_number(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"A=1\nB=2\njust words\n", "line 3: expected NAME=VALUE"},
        {"# c\n=1\n", "line 2: a variable name starts with a letter or '_'"},
        {"1A=1\n", "line 1: a variable name starts with a letter or '_'"},
        {"A-B=1\n", "line 1: invalid character in variable name"},
        {"A.B=1\n", "line 1: invalid character in variable name"},
        {"A B=1\n", "line 1: invalid character in variable name"},
        {"\n\n\n\nA=\"open\n", "line 5: unterminated quoted value"},
        {"A='open\"\n", "line 1: unterminated quoted value"},
        {"A=\"\n", "line 1: unterminated quoted value"},
        {"A=\"x\"y\n", "line 1: text after the closing quote"},
        {"A=\"x\" y\n", "line 1: text after the closing quote"},
        {"export\n", "line 1: expected NAME=VALUE"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct assigns a;
        char err[200];
        assert_int_equal(dotenv(bad[i].text, &a, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, bad[i].why);
    }
}

static void dotenv_refuses_nul_bytes_naming_the_line(void **state)
{
    (void)state;
    static const char text[] = "A=1\nB=x\0y\nC=3\n";
    struct assigns a;
    memset(&a, 0, sizeof(a));
    char err[200];
    assert_int_equal(dotenv_parse(text, sizeof(text) - 1, collect, &a, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "line 2: contains a NUL byte");
    assert_int_equal(a.calls, 0); /* nothing is assigned from a text with a NUL */
    static const char lead[] = "\0A=1";
    assert_int_equal(dotenv_parse(lead, sizeof(lead) - 1, collect, &a, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "line 1: contains a NUL byte");
    /* The length is honoured: bytes past it are not read. */
    assert_int_equal(dotenv_parse("A=1\nB=2", 3, collect, &a, err, sizeof(err)), 0);
    assert_string_equal(a.text, "A=1\n");
}

/* Write text to a fresh file; returns its path (static buffer). */
static const char *write_env_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/test_config_env_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void dotenv_file_sets_unset_variables_without_overriding(void **state)
{
    (void)state;
    unsetenv("BH_T_NEW");
    unsetenv("BH_T_DUP");
    assert_int_equal(setenv("BH_T_SET", "from-env", 1), 0);
    assert_int_equal(setenv("BH_T_EMPTY", "", 1), 0);
    const char *path = write_env_file("BH_T_NEW=from-file\nBH_T_SET=from-file\n"
                                      "BH_T_EMPTY=from-file\nBH_T_DUP=first\nBH_T_DUP=last\n");
    char err[256];
    assert_int_equal(dotenv_load(path, err, sizeof(err)), 0);
    unlink(path);
    assert_string_equal(getenv("BH_T_NEW"), "from-file");
    assert_string_equal(getenv("BH_T_SET"), "from-env");
    assert_string_equal(getenv("BH_T_EMPTY"), "from-file"); /* empty counts as unset */
    assert_string_equal(getenv("BH_T_DUP"), "last");
    unsetenv("BH_T_NEW");
    unsetenv("BH_T_SET");
    unsetenv("BH_T_EMPTY");
    unsetenv("BH_T_DUP");
}

static void dotenv_file_empty_values_set_nothing(void **state)
{
    (void)state;
    unsetenv("BH_T_BLANK");
    unsetenv("BH_T_QUOTED");
    assert_int_equal(setenv("BH_T_KEEP", "from-env", 1), 0);
    const char *path = write_env_file("BH_T_BLANK=\nBH_T_QUOTED=\"\"\nBH_T_KEEP=\n");
    char err[256];
    assert_int_equal(dotenv_load(path, err, sizeof(err)), 0);
    unlink(path);
    assert_null(getenv("BH_T_BLANK"));
    assert_null(getenv("BH_T_QUOTED"));
    assert_string_equal(getenv("BH_T_KEEP"), "from-env");
    unsetenv("BH_T_KEEP");
}

/* Unset every variable of the table, so the process environment starts clean. */
static void unset_table(void)
{
    struct cfgfx_row rows[64];
    size_t n = cfgfx_table_rows(rows, 64);
    for (size_t i = 0; i < n; i++)
        unsetenv(rows[i].name);
}

static void env_example_copied_as_is_changes_nothing(void **state)
{
    (void)state;
    unset_table();
    struct config def, c;
    char err[256];
    assert_int_equal(config_load(&def, err, sizeof(err)), 0);
    struct config_origin origin;
    if (config_load_all(&c, ASSET_ROOT "/.env.example", &origin, err, sizeof(err)) != 0)
        fail_msg(".env.example refused: %s", err);
    /* DATABASE_URL= in particular stays unset, so `make run` starts its own PostgreSQL. */
    assert_null(getenv("DATABASE_URL"));
    assert_string_equal(c.database_url, "");
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    FILE *fa = open_memstream(&a, &al), *fb = open_memstream(&b, &bl);
    struct config_origin none = {{CONFIG_SRC_DEFAULT}};
    config_print_effective(fa, &def, &none);
    config_print_effective(fb, &c, &none);
    fclose(fa);
    fclose(fb);
    assert_string_equal(a, b);
    free(a);
    free(b);
    config_free(&def);
    config_free(&c);
    unset_table();
}

static void effective_settings_name_their_source_and_mask_secrets(void **state)
{
    (void)state;
    unset_table();
    assert_int_equal(setenv("DATABASE_URL", "postgresql://app:envpass@db/app", 1), 0);
    assert_int_equal(setenv("API_PORT", "9000", 1), 0);
    assert_int_equal(setenv("LOG_LEVEL", "", 1), 0); /* empty: .env may fill it in */
    const char *path = write_env_file("API_PORT=9001\nLOG_LEVEL=debug\n"
                                      "ADMIN_TOKEN=tok3n-0123456789abcdef0123456789abcdef\n"
                                      "REDIS_URL=redis://bh:redispass@r:6380/1\n"
                                      "TRUSTED_PROXIES=\nDATABASE_URL=postgresql://x:filepass@h/x\n"
                                      "API_BIND='::'\n");
    struct config c;
    struct config_origin origin;
    char err[256];
    assert_int_equal(config_load_all(&c, path, &origin, err, sizeof(err)), 0);
    unlink(path);
    assert_int_equal(c.api_port, 9000);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(c.database_url, "postgresql://app:envpass@db/app");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print_effective(f, &c, &origin);
    fclose(f);
    static const char *const want[] = {
        "\nDATABASE_URL=postgresql://app:****@db/app ",
        "\nAPI_PORT=9000 ",
        "\nREDIS_URL=redis://bh:****@r:6380/1 ",
        "\nADMIN_TOKEN=**** ",
        "\nLOG_LEVEL=debug ",
        "\nAPI_BIND=:: ",
        "\nHTTP_THREADS=0 ",
        "\nRATE_LIMIT_BACKEND=memory ",
        "\nACCESS_LOG=true ",
    };
    char *full = NULL;
    assert_true(asprintf(&full, "\n%s", text) > 0);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(full, want[i]))
            fail_msg("no line starting \"%s\" in:\n%s", want[i] + 1, text);
    /* The source of each: the environment wins, empty counts as unset, .env next, then default. */
    static const struct {
        const char *name, *source;
    } src[] = {{"DATABASE_URL", "environment"}, {"API_PORT", "environment"}, {"LOG_LEVEL", ".env"},
               {"ADMIN_TOKEN", ".env"},         {"REDIS_URL", ".env"},       {"API_BIND", ".env"},
               {"TRUSTED_PROXIES", "default"},  {"HTTP_THREADS", "default"}};
    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
        char key[80];
        snprintf(key, sizeof(key), "\n%s=", src[i].name);
        const char *line = strstr(full, key);
        assert_non_null(line);
        const char *eol = strchr(line + 1, '\n');
        const char *hash = strstr(line, " # ");
        assert_true(hash && (!eol || hash < eol));
        if (strncmp(hash + 3, src[i].source, strlen(src[i].source)))
            fail_msg("%s: source \"%.20s\", want %s", src[i].name, hash + 3, src[i].source);
    }
    /* No secret, from either place. */
    assert_null(strstr(text, "envpass"));
    assert_null(strstr(text, "filepass"));
    assert_null(strstr(text, "redispass"));
    assert_null(strstr(text, "tok3n"));
    /* Every line is one the .env reader accepts. */
    struct assigns a;
    assert_int_equal(dotenv(text, &a, err, sizeof(err)), 0);
    free(full);
    free(text);
    config_free(&c);
    unset_table();
}

static void dotenv_file_with_a_bad_line_sets_nothing(void **state)
{
    (void)state;
    unsetenv("BH_T_GOOD");
    const char *path = write_env_file("BH_T_GOOD=1\n\nnot an assignment\n");
    char err[256], want[256];
    assert_int_equal(dotenv_load(path, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s: line 3: expected NAME=VALUE", path);
    assert_string_equal(err, want);
    assert_null(getenv("BH_T_GOOD"));
    unlink(path);
    assert_int_equal(dotenv_load(path, err, sizeof(err)), -ENOENT);
    /* A path that exists but cannot be read is an error, not "no file". */
    assert_int_equal(dotenv_load("/tmp", err, sizeof(err)), -EISDIR);
    assert_string_equal(err, "/tmp: Is a directory");
    assert_int_equal(dotenv_load("/dev/null/x", err, sizeof(err)), -ENOTDIR);
    assert_string_equal(err, "/dev/null/x: Not a directory");
    /* An empty file is fine and sets nothing. */
    path = write_env_file("");
    assert_int_equal(dotenv_load(path, err, sizeof(err)), 0);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dotenv_skips_comments_and_blank_lines),
        cmocka_unit_test(dotenv_accepts_export_and_blanks_around_the_equal_sign),
        cmocka_unit_test(dotenv_quotes_keep_the_value_verbatim),
        cmocka_unit_test(dotenv_inline_comments_end_values),
        cmocka_unit_test(dotenv_bad_lines_are_reported_by_number),
        cmocka_unit_test(dotenv_refuses_nul_bytes_naming_the_line),
        cmocka_unit_test(dotenv_file_sets_unset_variables_without_overriding),
        cmocka_unit_test(dotenv_file_empty_values_set_nothing),
        cmocka_unit_test(dotenv_file_with_a_bad_line_sets_nothing),
        cmocka_unit_test(env_example_copied_as_is_changes_nothing),
        cmocka_unit_test(effective_settings_name_their_source_and_mask_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
