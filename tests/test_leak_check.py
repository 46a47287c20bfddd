"""The secrets check of the lab tests (tests/lab.py) finds key material however it is encoded:
a check that cannot fail would prove nothing."""
import base64
import subprocess

import lab


def test_leaks_finds_keys_in_plain_base64_and_nested_base64(tmp_path):
    key_file = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-m", "PEM", "-f", str(key_file)], check=True)
    key = key_file.read_text().strip()
    token = "abcdefghij012345"
    material = lab.key_material(key) | lab.key_material(token)
    kubeconfig = f"users:\n- user:\n    client-key-data: {base64.b64encode(key.encode()).decode()}\n"
    material |= lab.key_material(kubeconfig)
    assert len(material) == 3
    printed = {
        "plain": f"error: running \"{key}\"",
        "base64 in a command": "khw_put /x 0600 " + base64.b64encode(("A" + key).encode()).decode(),
        "kubeconfig in base64": base64.b64encode(("xy" + kubeconfig).encode()).decode(),
        "token": f"token: {token[:6]}.{token}",
        "clean": "nothing to see " + base64.b64encode(b"hello world, this is not a key").decode(),
    }
    found = {hit.split(":")[0] for hit in lab.leaks(printed, material)}
    assert found == {"plain", "base64 in a command", "kubeconfig in base64", "token"}
    # a public key printed on purpose is not a leak, even where the private key file repeats it
    pub = (tmp_path / "k.pub").read_text()
    assert lab.leaks({"pub": pub}, material, {pub}) == []
