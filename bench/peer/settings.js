// Node-RED settings for the benchmark peer (bench/peer.py). Everything the run writes stays in
// PW_PEER_USERDIR (a temporary directory); the editor and admin API listen on 127.0.0.1 only.
const path = require("path");

const userDir = process.env.PW_PEER_USERDIR;
if (!userDir) {
    throw new Error("PW_PEER_USERDIR is not set (bench/peer.py sets it)");
}

module.exports = {
    userDir: userDir,
    flowFile: path.join(userDir, "flows.json"),
    flowFilePretty: false,
    credentialSecret: false,          // no credentials file with a generated key
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.PW_PEER_PORT || "0", 10),
    httpAdminRoot: "/",
    httpNodeRoot: false,              // no HTTP-in endpoints
    disableEditor: false,
    diagnostics: {enabled: false},
    runtimeState: {enabled: false},
    telemetry: {enabled: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}, modules: {allowInstall: false}},
    editorTheme: {projects: {enabled: false}, palette: {}, tours: false},
    contextStorage: {default: {module: "memory"}},
    logging: {console: {level: "info", metrics: false, audit: false}},
    exportGlobalContextKeys: false,
};
