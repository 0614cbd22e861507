/* API users: bearer tokens with a role, admin or readonly. Only the
 * token's SHA-256 is stored, so a copy of the database gives no access. */
#include <stdio.h>
#include <string.h>

#include "center/center.h"

int token_create(struct db *db, const char *role, const char *desc, char *token, size_t toklen,
                 char *err, size_t errlen)
{
    char hash[65], now[40];
    if (strcmp(role, "admin") && strcmp(role, "readonly")) {
        snprintf(err, errlen, "role '%s' is neither admin nor readonly", role);
        return -1;
    }
    if (random_token("fc_", token, toklen) < 0) {
        snprintf(err, errlen, "cannot make a random token");
        return -1;
    }
    sha256_hex(token, hash);
    now_iso(now);
    if (db_exec(db, "INSERT INTO tokens (role, hash, description, created) VALUES (?, ?, ?, ?)", 4,
                (const char *[]){ role, hash, desc, now }, NULL, err, errlen) < 0)
        return -1;
    return 0;
}

const char *token_role(struct db *db, const char *token, long long *id)
{
    char hash[65], err[ERRLEN];
    struct db_res *r;
    sha256_hex(token, hash);
    if (DBQ(db, &r, err, "SELECT role, id FROM tokens WHERE hash = ?", hash) < 0) {
        center_log("token check: %s", err);
        return NULL;
    }
    const char *role = db_val(r, 0, 0);
    /* static strings: the caller keeps no pointer into the result */
    const char *ret = !role ? NULL : !strcmp(role, "admin") ? "admin"
                                   : !strcmp(role, "readonly") ? "readonly" : NULL;
    *id = db_int(r, 0, 1);
    db_res_free(r);
    return ret;
}

int auth_bootstrap(struct db *db, char *err, size_t errlen)
{
    struct db_res *r;
    char tok[80];
    if (db_begin(db, err, errlen) < 0)
        return -1;
    if (db_exec(db, "SELECT COUNT(*) FROM tokens", 0, NULL, &r, err, errlen) < 0)
        goto fail;
    long long n = db_int(r, 0, 0);
    db_res_free(r);
    if (n == 0 && token_create(db, "admin", "bootstrap", tok, sizeof(tok), err, errlen) < 0)
        goto fail;
    if (db_commit(db, err, errlen) < 0)
        return -1;
    if (n == 0) {
        /* the only time this token is shown: it is stored hashed */
        printf("bootstrap admin token: %s\n", tok);
        fflush(stdout);
        center_log("first start: made the bootstrap admin token (printed on stdout, once)");
    }
    return 0;
fail:
    db_rollback(db);
    return -1;
}
