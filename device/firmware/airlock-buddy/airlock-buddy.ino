/*
 * airlock-buddy: the one-button approval device for airlock (SPEC section 7). A thin shell
 * around the portable core in device/firmware/ (run `make -C device/firmware sketch` to
 * copy it into src/ here): USB serial in and out, a button on pin 2 to GND, the built-in
 * LED, and the pair key in EEPROM. For boards with native USB serial (Leonardo, RP2040).
 */
#include <Arduino.h>
#include <EEPROM.h>

#include "src/buddy_fw.h"

/* Change per device if you have several: [A-Z0-9], 1 to 16 characters. */
#define BUDDY_DEVID "BUDDY1"
#define BUTTON_PIN 2
#define BAUD 115200
#define MAX_BYTES_PER_LOOP 64 /* keep ticking the button while the host talks */

/* EEPROM layout: 4 magic bytes, then the 32-byte key. Magic absent: unpaired. */
#define EE_MAGIC_ADDR 0
#define EE_KEY_ADDR 4
#define EE_SIZE (EE_KEY_ADDR + BUDDY_KEY_LEN)
static const uint8_t ee_magic[4] = {'A', 'L', 'B', '1'};

static struct buddy_fw fw;

static void
ee_begin(void)
{
#if defined(ARDUINO_ARCH_RP2040) || defined(ARDUINO_ARCH_ESP32)
    EEPROM.begin(256); /* flash-backed emulation needs a size and a commit */
#endif
}

static void
ee_commit(void)
{
#if defined(ARDUINO_ARCH_RP2040) || defined(ARDUINO_ARCH_ESP32)
    EEPROM.commit();
#endif
}

static int
load_key(uint8_t key[BUDDY_KEY_LEN])
{
    int i;

    for (i = 0; i < 4; i++)
        if (EEPROM.read(EE_MAGIC_ADDR + i) != ee_magic[i])
            return 0;
    for (i = 0; i < BUDDY_KEY_LEN; i++)
        key[i] = EEPROM.read(EE_KEY_ADDR + i);
    return 1;
}

static int
store_key(const uint8_t key[BUDDY_KEY_LEN], void *arg)
{
    int i;

    (void)arg;
    for (i = 0; i < BUDDY_KEY_LEN; i++)
        EEPROM.write(EE_KEY_ADDR + i, key[i]);
    for (i = 0; i < 4; i++)
        EEPROM.write(EE_MAGIC_ADDR + i, ee_magic[i]);
    ee_commit();
    for (i = 0; i < BUDDY_KEY_LEN; i++)
        if (EEPROM.read(EE_KEY_ADDR + i) != key[i])
            return -1; /* worn or failed cell: the host gets ERR store-failed */
    return 0;
}

static void
write_line(const char *line, size_t len, void *arg)
{
    (void)arg;
    Serial.write((const uint8_t *)line, len);
}

void
setup(void)
{
    struct buddy_fw_config cfg;
    uint8_t key[BUDDY_KEY_LEN];
    int have_key;

    pinMode(BUTTON_PIN, INPUT_PULLUP);
    pinMode(LED_BUILTIN, OUTPUT);
    Serial.begin(BAUD);
    ee_begin();
    have_key = load_key(key);
    memset(&cfg, 0, sizeof(cfg));
    cfg.devid = BUDDY_DEVID;
    cfg.key = have_key ? key : NULL;
    cfg.pairing = 0; /* held button at power-on: the core's first tick sees it */
    cfg.write = write_line;
    cfg.store_key = store_key;
    cfg.event = NULL;
    cfg.arg = NULL;
    buddy_fw_init(&fw, &cfg);
    memset(key, 0, sizeof(key));
    buddy_fw_tick(&fw, millis(), digitalRead(BUTTON_PIN) == LOW);
}

void
loop(void)
{
    uint32_t now;
    int n = 0;

    while (n++ < MAX_BYTES_PER_LOOP && Serial.available() > 0)
        buddy_fw_feed_byte(&fw, (uint8_t)Serial.read());
    now = millis();
    buddy_fw_tick(&fw, now, digitalRead(BUTTON_PIN) == LOW);
    digitalWrite(LED_BUILTIN, buddy_fw_led_level(&fw, now) ? HIGH : LOW);
}
