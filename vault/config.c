/* The vault's token settings as written in the policy, in the form hsm_open() takes. */
#include <string.h>

#include "policy/policy.h"
#include "vault/vault.h"

void
vault_config_from_policy(const struct policy *p, struct hsm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->backend = p->vault.backend == POLICY_BACKEND_TPM2 ? HSM_BACKEND_TPM2 : HSM_BACKEND_PKCS11;
    cfg->pkcs11_module = p->vault.pkcs11_module;
    cfg->pkcs11_token_uri = p->vault.pkcs11_token_uri;
    cfg->pkcs11_pin = p->vault.pkcs11_pin;
    cfg->pkcs11_key_label = p->vault.pkcs11_key_label;
    cfg->tpm2_tcti = p->vault.tpm2_tcti;
    cfg->tpm2_primary_handle = p->vault.tpm2_primary_handle;
}
