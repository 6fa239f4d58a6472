/* CPU backend: registration, device facts, buffers. */
#include "backend-impl.h"
#include "cpu/cpu-features.h"
#include "copse.h"
#include "test.h"

int main(void)
{
    CHECK(copse__backend_count() >= 1);
    copse_backend_reg *last = copse__backend_get(copse__backend_count() - 1);
    CHECK(last != NULL);
    CHECK_STR_EQ(last->name, "cpu"); /* CPU is the fallback, registered last */
    CHECK(copse__backend_get(copse__backend_count()) == NULL);

    copse_backend_reg *cpu = copse__backend_find("cpu");
    CHECK(cpu == last);
    CHECK(copse__backend_find("no-such-backend") == NULL);
    CHECK_INT_EQ(cpu->api_version, COPSE_BACKEND_API_VERSION);
    CHECK_INT_EQ(cpu->iface.dev_count(cpu), 1);

    copse_backend_dev *dev = cpu->iface.dev_get(cpu, 0);
    CHECK(dev != NULL && dev->reg == cpu);
    CHECK(cpu->iface.dev_get(cpu, 1) == NULL);
    copse_dev_props p;
    dev->iface.get_props(dev, &p);
    CHECK_INT_EQ(p.kind, COPSE_DEV_CPU);
    CHECK(strncmp(p.name, "cpu: ", 5) == 0);
    CHECK(p.compute_units >= 1);
    CHECK(p.memory_total > 0);
    fprintf(stderr, "device: %s [%s]\n", p.name, p.features);

    /* features string lists exactly the set bits */
    char fs[256];
    copse__cpu_features_string(COPSE_CPU_AVX2 | COPSE_CPU_AVX512VNNI, fs, sizeof fs);
    CHECK_STR_EQ(fs, "avx2 avx512vnni");
    copse__cpu_features_string(0, fs, sizeof fs);
    CHECK_STR_EQ(fs, "");
    /* AVX-512 implies the OS saves ZMM state, which implies YMM: AVX2 detection must agree */
    uint32_t f = copse__cpu_features();
    if (f & COPSE_CPU_AVX512F)
        CHECK((f & COPSE_CPU_AVX2) != 0);

    /* buffers: round trip, bounds */
    copse_backend_buffer *buf = NULL;
    CHECK_STATUS(dev->iface.buffer_alloc(dev, 1000, &buf), COPSE_OK);
    CHECK(buf && buf->size == 1000 && buf->dev == dev);
    unsigned char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++)
        src[i] = (unsigned char)(i * 7);
    CHECK_STATUS(buf->iface.upload(buf, 0, src, 1000), COPSE_OK);
    memset(dst, 0, sizeof dst);
    CHECK_STATUS(buf->iface.download(buf, 0, dst, 1000), COPSE_OK);
    CHECK(memcmp(src, dst, 1000) == 0);
    CHECK_STATUS(buf->iface.upload(buf, 999, src, 2), COPSE_ERANGE);
    CHECK_STATUS(buf->iface.download(buf, 1001, dst, 0), COPSE_ERANGE);
    CHECK(buf->iface.host_ptr(buf) != NULL);
    CHECK(((uintptr_t)buf->iface.host_ptr(buf) & 63) == 0);
    buf->iface.free(buf);
    return test_exit();
}
