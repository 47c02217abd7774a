"""Custom pyinfra facts of llmhost: small FactBase classes, a command and a parser each."""

from __future__ import annotations

import json

import re

from pyinfra.api import FactBase

from operations.core.boundary import shell_word

NVIDIA_SMI_QUERY = "index,name,memory.total,compute_cap,driver_version,pci.bus_id"


def first_int(output) -> int:
    """The number on the first output line, 0 when there is none."""
    return int(output[0]) if output and output[0].strip().isdigit() else 0


def first_line(output) -> str:
    """The first output line, stripped ('' when there is none)."""
    return output[0].strip() if output else ""


class NvidiaSmi(FactBase):
    """What nvidia-smi says about the GPUs: status ok / missing / error (with the error text).

    Sample output::

        0, NVIDIA GeForce RTX 3060, 12288, 8.6, 580.95.05, 00000000:01:00.0
        exit=0

    or ``Failed to initialize NVML: Driver/library version mismatch`` then ``exit=18``.
    """

    @staticmethod
    def default():
        return {"status": "missing", "gpus": [], "error": "", "version_mismatch": False}

    def command(self) -> str:
        return (
            "if command -v nvidia-smi >/dev/null 2>&1; then "
            f"nvidia-smi --query-gpu={NVIDIA_SMI_QUERY} --format=csv,noheader,nounits 2>&1; echo exit=$?; "
            "else echo exit=missing; fi"
        )

    def process(self, output):
        gpus, other, status = [], [], "error"
        for line in output:
            line = line.strip()
            if line.startswith("exit="):
                code = line[5:]
                status = "missing" if code == "missing" else ("ok" if code == "0" else "error")
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 6 and parts[0].isdigit():
                cc = parts[3]
                gpus.append({
                    "index": int(parts[0]), "name": parts[1],
                    "memory_mib": int(float(parts[2])) if re.match(r"^[\d.]+$", parts[2]) else None,
                    "compute_capability": float(cc) if re.match(r"^[\d.]+$", cc) else None,
                    "driver_version": parts[4], "pci_bus_id": parts[5],
                })
            elif line:
                other.append(line)
        if status == "ok" and not gpus:
            status = "error"
        return {"status": status, "gpus": gpus, "error": "\n".join(other) if status == "error" else "",
                "version_mismatch": any("version mismatch" in o.lower() for o in other)}


class PciNvidiaGpus(FactBase):
    """NVIDIA display/3D controllers on the PCI bus, read from sysfs (no lspci needed).

    Sample output::

        0000:01:00.0 0x2504 0x030000
    """

    @staticmethod
    def default():
        return []

    def command(self) -> str:
        return (
            "for d in /sys/bus/pci/devices/*; do [ -r \"$d/vendor\" ] || continue; "
            "[ \"$(cat \"$d/vendor\")\" = 0x10de ] || continue; c=$(cat \"$d/class\"); "
            "case \"$c\" in 0x03*) echo \"${d##*/} $(cat \"$d/device\") $c\";; esac; done; true"
        )

    def process(self, output):
        devices = []
        for line in output:
            parts = line.split()
            if len(parts) == 3:
                devices.append({"slot": parts[0], "device_id": parts[1], "class": parts[2]})
        return devices


class NvidiaKernelModule(FactBase):
    """The loaded NVIDIA kernel module (/proc/driver/nvidia/version): version and flavour, {} when none.

    Sample output::

        NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22-I3-AE18-23-3)  Mon Jun  2 2025
        GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)
    """

    @staticmethod
    def default():
        return {}

    def command(self) -> str:
        return "cat /proc/driver/nvidia/version 2>/dev/null || true"

    def process(self, output):
        for line in output:
            if line.startswith("NVRM version:"):
                m = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", line + " ")
                return {"version": m.group(1) if m else None,
                        "flavour": "open" if "Open Kernel Module" in line else "proprietary"}
        return {}


class SecureBoot(FactBase):
    """Secure Boot state from the EFI variable: enabled / disabled / not-efi / unknown.

    Sample output::

        SecureBoot 1
    """

    @staticmethod
    def default():
        return "unknown"

    def command(self) -> str:
        return (
            "f=$(ls /sys/firmware/efi/efivars/SecureBoot-* 2>/dev/null | head -n1); "
            "if [ -n \"$f\" ]; then echo \"SecureBoot $(od -An -t u1 \"$f\" | awk '{print $NF}')\"; "
            "elif [ -d /sys/firmware/efi ]; then echo efi; else echo not-efi; fi"
        )

    def process(self, output):
        text = " ".join(output).strip()
        if text.startswith("SecureBoot"):
            return "enabled" if text.endswith("1") else "disabled"
        return "not-efi" if text == "not-efi" else "unknown"


class AptHolds(FactBase):
    """Packages on hold (apt-mark showhold).

    Sample output::

        nvidia-utils-580-server
    """

    @staticmethod
    def default():
        return []

    def command(self) -> str:
        return "apt-mark showhold 2>/dev/null || true"

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip())


class DiskFreeMib(FactBase):
    """Free MiB on the filesystem that holds path (or its nearest existing parent).

    Sample output::

        51234
    """

    @staticmethod
    def default():
        return 0

    def command(self, path: str) -> str:
        return (f"p={shell_word(path)}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
                "df -Pk \"$p\" | awk 'NR==2 {print int($4/1024)}'")

    def process(self, output):
        return first_int(output)


class MemTotalMib(FactBase):
    """Total RAM in MiB (/proc/meminfo; no procps needed).

    Sample output::

        31998
    """

    @staticmethod
    def default():
        return 0

    def command(self) -> str:
        return "awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo"

    def process(self, output):
        return first_int(output)


class PortOwners(FactBase):
    """For each listening TCP port asked about ("8080"): the process holding it, its PID and its systemd unit.

    Sample output::

        8080 812 apache2 0::/system.slice/apache2.service
        8000 2211 python3 0::/user.slice/user-1000.slice/session-2.scope
    """

    @staticmethod
    def default():
        return {}

    def command(self, ports: list[int]) -> str:
        plist = " ".join(str(int(p)) for p in ports)
        return (f"for p in {plist}; do line=$(ss -ltnpH \"sport = :$p\" 2>/dev/null | head -n1); "
                "pid=$(echo \"$line\" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2); "
                "proc=$(echo \"$line\" | grep -o 'users:((\"[^\"]*\"' | head -n1 | cut -d'\"' -f2); "
                "[ -n \"$pid\" ] && echo \"$p $pid ${proc:-?} $(tail -n1 /proc/$pid/cgroup 2>/dev/null)\"; done; true")

    def process(self, output):
        owners = {}
        for line in output:
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
                owners[parts[0]] = {"pid": int(parts[1]), "process": parts[2],
                                         "unit": parts[3].strip() if len(parts) > 3 else ""}
        return owners


class DpkgVersion(FactBase):
    """The installed version of one package ('' when it is not installed).

    Sample output::

        580.95.05-0ubuntu0.24.04.2
    """

    @staticmethod
    def default():
        return ""

    def command(self, package: str) -> str:
        return f"dpkg-query -W -f='${{Version}}' {package} 2>/dev/null || true"

    def process(self, output):
        return first_line(output)


class KernelImages(FactBase):
    """The running kernel, the kernel that boots next (the newest /boot/vmlinuz-*, the boot loader's default on
    Ubuntu), and the installed linux-image metapackages with the kernel image each depends on.

    Sample output::

        running=6.8.0-48-generic
        next=6.11.0-29-generic
        linux-image-generic-hwe-24.04 6.11.0-29.29~24.04.1 linux-image-6.11.0-29-generic, linux-firmware
        linux-image-generic 6.8.0-48.48 linux-image-6.8.0-48-generic
    """

    @staticmethod
    def default():
        return {"running": "", "next": "", "meta": {}}

    def command(self, running: str = "") -> str:
        # running: TEST ONLY (driver_standin_kernel): the kernel a container is taken to run instead of uname -r
        return (f"echo running={running or '$(uname -r)'}; echo next=$(ls /boot 2>/dev/null | "
                "sed -n 's/^vmlinuz-//p' | sort -V | tail -n1); dpkg-query -W -f='${db:Status-Abbrev} ${Package} "
                "${Version} ${Depends}\\n' 'linux-image-generic*' 'linux-image-lowlatency*' 'linux-image-virtual*' "
                "2>/dev/null | sed -n 's/^[ih]i *//p' || true")

    def process(self, output):
        out = {"running": "", "next": "", "meta": {}}
        for line in output:
            if line.startswith(("running=", "next=")):
                key, value = line.split("=", 1)
                out[key] = value.strip()
            elif line.strip():
                name, _ver, *deps = line.split(None, 2) + [""]
                images = re.findall(r"linux-image-(\d[\w.~+-]*)", deps[0] if deps else "")
                out["meta"][name] = images[0] if images else ""
        out["next"] = out["next"] or out["running"]
        return out


class AptVersions(FactBase):
    """Every version apt knows of each package (the archive's and the installed one), in apt's order (newest
    first), with its Depends: {package: [{"version", "depends"}]}.

    Sample output::

        Package: linux-modules-nvidia-580-server-open-generic
        Version: 6.8.0-90.91+2
        Depends: linux-modules-nvidia-580-server-open-6.8.0-90-generic (= 6.8.0-90.91+2)
    """

    @staticmethod
    def default():
        return {}

    def command(self, packages: list[str]) -> str:
        names = " ".join(packages)
        return (f"for p in {names}; do apt-cache show \"$p\" 2>/dev/null | grep -E '^(Package|Version|Depends):'; "
                "done; true")

    def process(self, output):
        out: dict[str, list[dict]] = {}
        current = None
        for line in output:
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "Package":
                current = {"version": "", "depends": ""}
                out.setdefault(value, []).append(current)
            elif current is not None and key == "Version":
                current["version"] = value
            elif current is not None and key == "Depends":
                current["depends"] = value
        return out


class NvidiaModuleForKernel(FactBase):
    """Version of the nvidia module installed for the running kernel ('' when there is none).

    Sample output::

        580.95.05
    """

    @staticmethod
    def default():
        return ""

    def command(self, kernel: str = "") -> str:
        # modinfo needs kmod and depmod's index; the module file itself is the fallback evidence.
        k = kernel or "$(uname -r)"
        return (f"modinfo -k \"{k}\" -F version nvidia 2>/dev/null || "
                f"find /lib/modules/\"{k}\" -name 'nvidia.ko*' -printf 'present\\n' -quit 2>/dev/null || true")

    def process(self, output):
        return first_line(output)


class SnapshotFiles(FactBase):
    """Whether every file the weights marker lists is on disk at its recorded size: 'complete', 'missing <files>'
    (a lost or truncated file, e.g. a deleted blob behind the snapshot's symlink) or 'absent' (no marker).

    Sample output::

        missing model.safetensors
    """

    @staticmethod
    def default():
        return "absent"

    def command(self, marker: str) -> str:
        check = ("import json, os, sys; m = json.load(open(sys.argv[1])); "
                 "bad = [f for f, n in sorted(m['files'].items()) if not os.path.isfile(os.path.join(m['path'], f)) "
                 "or os.path.getsize(os.path.join(m['path'], f)) != n]; "
                 "print('missing ' + ' '.join(bad) if bad else 'complete')")
        return f"if [ -f {marker} ]; then python3 -c \"{check}\" {marker} || echo 'missing (unreadable marker)'; else echo absent; fi"

    def process(self, output):
        return first_line(output) or "absent"


class GpuMemoryHeld(FactBase):
    """GPU memory other processes hold (a desktop's display server, compositor and browser; another CUDA program),
    MiB on the busiest GPU: nvidia-smi's memory.used (graphics and compute processes both count there) less what the
    processes of llmhost's own vllm.service hold (its cgroup's PIDs among the compute apps), with the others named:
    compute apps from --query-compute-apps, graphics processes (which that query does not list) from
    `nvidia-smi -q -d PIDS`. Recorded on the GPU host: tests/fixtures/gpu-host/smi-memory/ (a CUDA process; an
    OpenGL client holding 775 MiB of textures, the kind of memory a desktop holds; both at once).

    Sample output::

        gpu 0, 143771, 2080
        app 583, python3, 1542
        pids Process ID: 618
        pids Type: G
        pids Name: python3
        pids Used GPU Memory: 519 MiB
    """

    @staticmethod
    def default():
        return {"used_mib": 0, "own_mib": 0, "others_mib": 0, "apps": []}

    def command(self) -> str:
        return ("if command -v nvidia-smi >/dev/null 2>&1; then "
                "nvidia-smi --format=csv,noheader,nounits --query-gpu=index,memory.total,memory.used 2>/dev/null "
                "| sed 's/^/gpu /'; "
                "nvidia-smi --format=csv,noheader,nounits --query-compute-apps=pid,process_name,used_memory 2>/dev/null "
                "| sed 's/^/app /'; "
                "nvidia-smi -q -d PIDS 2>/dev/null "
                "| sed -n 's/^ *\\(Process ID\\|Type\\|Name\\|Used GPU Memory\\) *: */pids \\1: /p'; "
                "cg=$(systemctl show -p ControlGroup --value vllm.service 2>/dev/null); "
                "[ -n \"$cg\" ] && [ -f \"/sys/fs/cgroup$cg/cgroup.procs\" ] && sed 's/^/own /' \"/sys/fs/cgroup$cg/cgroup.procs\"; "
                "fi; true")

    def process(self, output):
        used, apps, own, procs = 0, [], set(), []
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            parts = [p.strip() for p in rest.split(",")]
            if kind == "gpu" and len(parts) == 3 and parts[2].isdigit():
                used = max(used, int(parts[2]))
            elif kind == "app" and len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
                apps.append({"pid": int(parts[0]), "name": parts[1], "mib": int(parts[2])})
            elif kind == "own" and rest.strip().isdigit():
                own.add(int(rest.strip()))
            elif kind == "pids":  # nvidia-smi -q -d PIDS, one field a line, a process from its "Process ID"
                key, _, value = rest.partition(": ")
                if key == "Process ID":
                    procs.append({})
                if procs:
                    procs[-1][key] = value.strip()
        listed = {a["pid"] for a in apps}
        for p in procs:  # graphics processes (a display server, a compositor, a browser): not among compute apps
            pid, mib = p.get("Process ID", ""), p.get("Used GPU Memory", "").removesuffix(" MiB")
            if "G" in p.get("Type", "") and pid.isdigit() and mib.isdigit() and int(pid) not in listed:
                apps.append({"pid": int(pid), "name": p.get("Name", "?"), "mib": int(mib)})
        own_mib = sum(a["mib"] for a in apps if a["pid"] in own)
        return {"used_mib": used, "own_mib": own_mib, "others_mib": max(used - own_mib, 0),
                "apps": [a for a in apps if a["pid"] not in own]}


class ModelSnapshots(FactBase):
    """The complete snapshots under a models directory, from their completion markers: one dict each with repo,
    commit, bytes (the files the marker lists) and mtime (when the fetch finished).

    Sample output::

        {"bytes": 5735411712, "commit": "ee9e2f9003ae49425a29e73a29b59dffc8870a83", "mtime": 1764626400, "repo": "astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit"}
    """

    @staticmethod
    def default():
        return []

    def command(self, models_dir: str) -> str:
        read = ("import glob, json, os, sys\n"
                "for m in sorted(glob.glob(os.path.join(sys.argv[1], '.complete-*'))):\n"
                "    try:\n"
                "        d = json.load(open(m))\n"
                "    except (OSError, ValueError):\n"
                "        continue\n"
                "    print(json.dumps(dict(repo=d['repo'], commit=d['commit'], bytes=sum(d['files'].values()), "
                "mtime=int(os.path.getmtime(m))), sort_keys=True))")
        return f"[ -d {models_dir} ] && python3 -c \"{read}\" {models_dir} || true"

    def process(self, output):
        out = []
        for line in output:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
