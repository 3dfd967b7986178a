/*
 * A wvs scheduler written in C: smooth weighted round robin (nginx's upstream algorithm,
 * which IPVS does not have). Each pick adds every server's weight to its running score,
 * takes the highest score and lowers it by the total: over each cycle of the weights' sum
 * every server is picked as often as its weight, and the picks are interleaved (weights
 * 3, 2, 1 give a a b a b c ..., not a a a b b c).
 *
 * Build (clang and lld, no C library; see sdk/ABI.md):
 *
 *     clang --target=wasm32 -O2 -ffreestanding -nostdlib -Wl,--no-entry \
 *           -I ../../sdk -o sched.wasm sched.c
 *
 * and load it as any plugin:
 *
 *     [[plugin]]
 *     name = "swrr"
 *     path = "sched.wasm"
 */
#include "wvs.h"

/* Each server's running score, by position in the table; reset when the servers change. */
static int64_t score[WVS_MAX_DESTS];

static void update(const wvs_dest_info *dests, uint32_t n, uint32_t svc_flags) {
    (void)dests;
    (void)svc_flags;
    for (uint32_t i = 0; i < n; i++)
        score[i] = 0;
}

static int32_t schedule(const wvs_conn_info *conn, const wvs_dest_info *dests, uint32_t n) {
    (void)conn;
    int64_t total = 0;
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!wvs_schedulable(&dests[i]))
            continue;
        score[i] += dests[i].weight;
        total += dests[i].weight;
        if (best < 0 || score[i] > score[best])
            best = (int32_t)i;
    }
    if (best >= 0)
        score[best] -= total;
    return best;
}

WVS_EXPORT_SCHEDULER(update, schedule)
