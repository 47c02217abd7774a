"""A graphics (OpenGL) client holding GPU memory on the GPU host, and what nvidia-smi says about it (issue 20).

A desktop's display server, compositor and browser hold graphics memory on the card vLLM shares. The GPU host has no
display, so this stands in for them with one real OpenGL client of the NVIDIA driver: an EGL context on the GPU
(EGL_EXT_device_base, no window) that allocates textures of MIB MiB in all and clears them (so the driver backs them).
While it holds them, the commands GpuMemoryHeld runs, nvidia-smi's process table and `nvidia-smi -q -d PIDS` are
recorded to OUT. Run on the GPU host with the EGL loader carried (the device tool's .gl debs unpacked first, and
__EGL_VENDOR_LIBRARY_FILENAMES pointing at the driver's 10_nvidia.json).
Usage: gpu_graphics_memory.py OUT MIB FACT_COMMAND_FILE (GpuMemoryHeld().command(), written on the controller: the
GPU host has no pyinfra)
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

EGL_PLATFORM_DEVICE_EXT, EGL_OPENGL_API = 0x313F, 0x30A2
GL_TEXTURE_2D, GL_RGBA8, GL_RGBA, GL_UNSIGNED_BYTE = 0x0DE1, 0x8058, 0x1908, 0x1401
GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_COLOR_BUFFER_BIT = 0x8D40, 0x8CE0, 0x4000
SIDE = 8192  # an 8192 x 8192 RGBA8 texture: 256 MiB


def hold(mib: int):
    egl = ctypes.CDLL("libEGL.so.1")
    gl = ctypes.CDLL("libOpenGL.so.0")
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.c_int))(egl.eglGetProcAddress(b"eglQueryDevicesEXT"))
    platform = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(
        egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT"))
    devices, n = (ctypes.c_void_p * 8)(), ctypes.c_int()
    assert query(8, devices, ctypes.byref(n)) and n.value, "no EGL device"
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    egl.eglCreateContext.restype = ctypes.c_void_p
    egl.eglCreateContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    egl.eglMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    for i in range(n.value):
        dpy = platform(EGL_PLATFORM_DEVICE_EXT, devices[i], None)
        if dpy and egl.eglInitialize(dpy, None, None):
            break
    else:
        raise SystemExit("no EGL display on any device")
    assert egl.eglBindAPI(EGL_OPENGL_API), "eglBindAPI"
    ctx = egl.eglCreateContext(dpy, None, None, None)  # EGL_KHR_no_config_context + surfaceless
    assert ctx and egl.eglMakeCurrent(dpy, None, None, ctx), f"eglMakeCurrent: {egl.eglGetError():#x}"
    gl.glGetString.restype = ctypes.c_char_p
    print("GL vendor:", gl.glGetString(0x1F00), "renderer:", gl.glGetString(0x1F01), flush=True)
    for _ in range(max(1, mib // 256)):
        tex, fbo = ctypes.c_uint(), ctypes.c_uint()
        gl.glGenTextures(1, ctypes.byref(tex))
        gl.glBindTexture(GL_TEXTURE_2D, tex)
        gl.glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, SIDE, SIDE, 0, GL_RGBA, GL_UNSIGNED_BYTE, None)
        gl.glGenFramebuffers(1, ctypes.byref(fbo))
        gl.glBindFramebuffer(GL_FRAMEBUFFER, fbo)
        gl.glFramebufferTexture2D(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_TEXTURE_2D, tex, 0)
        gl.glClearColor(ctypes.c_float(0.5), ctypes.c_float(0.5), ctypes.c_float(0.5), ctypes.c_float(1.0))
        gl.glClear(GL_COLOR_BUFFER_BIT)
    gl.glFinish()
    print("GL error:", gl.glGetError(), flush=True)
    return egl, gl, ctx


def record(out: Path, fact_command: str) -> None:
    runs = {"smi-graphics-fact.txt": fact_command, "smi-graphics-table.txt": "nvidia-smi",
            "smi-graphics-pids.txt": "nvidia-smi -q -d PIDS"}
    for name, cmd in runs.items():
        p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
        (out / name).write_text(f"$ {cmd}\n{p.stdout}{p.stderr}")
    (out / "graphics-pid.txt").write_text(f"{os.getpid()}\n")


if __name__ == "__main__":
    out, mib = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    keep = hold(mib)
    record(out, Path(sys.argv[3]).read_text())
